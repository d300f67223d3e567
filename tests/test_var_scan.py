"""The scanned block stack: remat policies, per-block drop-path rates, stacked conversion."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from var_jax.configs import REMAT_POLICIES, VARConfig
from var_jax.var import VAR, init_var_params
from var_jax.weights.var_keys import stack_blocks, unstack_blocks, var_params_from_torch

TINY = VARConfig(depth=3, embed_dim=64, num_heads=2, num_classes=10, patch_nums=(1, 2, 3),
                 vocab_size=64, vae_channels=8, drop_path_rate=0.3)


def _params(cfg: VARConfig, seed: int = 0):
    """Paper init plus a wiggle, so every block changes its input (gammas are ~1e-5 at init)."""
    p = init_var_params(cfg, jax.random.key(seed))
    return jax.tree.map(lambda a: a + 0.05 * jnp.sin(jnp.arange(a.size).reshape(a.shape) + seed),
                        p)


def _inputs(cfg: VARConfig, B: int):
    rng = np.random.default_rng(0)
    return (rng.integers(0, cfg.num_classes, B).astype(np.int32),
            rng.normal(size=(B, cfg.seq_len - cfg.first_l, cfg.vae_channels)).astype(np.float32))


@pytest.mark.parametrize("remat", ["dots", "full"])
def test_remat_policies_keep_logits_and_gradients(remat):
    params, (labels, x) = _params(TINY), _inputs(TINY, 2)
    target = np.random.default_rng(1).integers(0, TINY.vocab_size, (2, TINY.seq_len))

    def loss_and_logits(cfg, p):
        # with a dropout rng: class dropout and the scanned per-block drop-path are active
        logits = VAR(cfg).apply({"params": p}, labels, x, rngs={"dropout": jax.random.key(3)})
        logp = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(logp, target[..., None], -1).mean(), logits

    grad = lambda cfg: jax.jit(jax.grad(loss_and_logits, argnums=1, has_aux=True),  # noqa: E731
                               static_argnums=0)(cfg, params)
    want_g, want_logits = grad(TINY)
    got_g, got_logits = grad(dataclasses.replace(TINY, remat=remat))
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=1e-6)
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got_g), jax.tree.leaves(want_g)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7, err_msg=str(path))
    assert float(jnp.abs(want_g["blocks"]["ffn"]["fc1"]["kernel"]).max()) > 0


def test_invalid_remat_names_the_choices():
    with pytest.raises(ValueError, match=r"remat='dot'.*\('none', 'dots', 'full'\)"):
        VARConfig(remat="dot")
    assert REMAT_POLICIES == ("none", "dots", "full")


def test_each_block_gets_its_own_drop_path_rate():
    """Rates rise linearly from 0: with depth 2 only block 1 (rate 0.45) ever drops, so 64
    copies of one input come out in at most 4 ways (its attn / ffn branch kept or dropped)."""
    cfg = dataclasses.replace(TINY, depth=2, drop_path_rate=0.45, cond_drop_rate=0.0)
    params = _params(cfg)
    labels, x = _inputs(cfg, 1)
    labels, x = np.repeat(labels, 64), np.repeat(x, 64, 0)
    out = np.asarray(jax.jit(VAR(cfg).apply)({"params": params}, labels, x,
                                              rngs={"dropout": jax.random.key(0)}))
    distinct = np.unique(out.reshape(64, -1).round(4), axis=0)
    assert 2 <= len(distinct) <= 4, len(distinct)
    # (the same rate on both blocks would give up to 16.) Block 0 alone: never dropped.
    first = {**params, "blocks": jax.tree.map(lambda a: a[:1], params["blocks"])}
    one = jax.jit(VAR(dataclasses.replace(cfg, depth=1)).apply)(
        {"params": first}, labels, x, rngs={"dropout": jax.random.key(0)})
    assert len(np.unique(np.asarray(one).reshape(64, -1).round(4), axis=0)) == 1


def _torch_state_dict(cfg: VARConfig, params) -> dict:
    """The torch layout of `params` (Linear weights (out, in)), as the released .pth files."""
    sd = {"pos_start": params["pos_start"], "pos_1LC": params["pos_1LC"],
          "word_embed.weight": params["word_embed"]["kernel"].T,
          "word_embed.bias": params["word_embed"]["bias"],
          "class_emb.weight": params["class_emb"]["embedding"],
          "lvl_embed.weight": params["lvl_embed"]["embedding"],
          "head_nm.ada_lin.1.weight": params["head_nm"]["ada_lin"]["kernel"].T,
          "head_nm.ada_lin.1.bias": params["head_nm"]["ada_lin"]["bias"],
          "head.weight": params["head"]["kernel"].T, "head.bias": params["head"]["bias"]}
    for i in range(cfg.depth):
        b = jax.tree.map(lambda a: a[i], params["blocks"])
        a, f = b["attn"], b["ffn"]
        sd.update({f"blocks.{i}.{k}": v for k, v in {
            "ada_lin.1.weight": b["ada_lin"]["kernel"].T, "ada_lin.1.bias": b["ada_lin"]["bias"],
            "attn.mat_qkv.weight": a["mat_qkv"]["kernel"].T, "attn.q_bias": a["q_bias"],
            "attn.v_bias": a["v_bias"], "attn.scale_mul_1H11": a["scale_mul_1H11"],
            "attn.zero_k_bias": np.zeros_like(a["q_bias"]),
            "attn.proj.weight": a["proj"]["kernel"].T, "attn.proj.bias": a["proj"]["bias"],
            "ffn.fc1.weight": f["fc1"]["kernel"].T, "ffn.fc1.bias": f["fc1"]["bias"],
            "ffn.fc2.weight": f["fc2"]["kernel"].T, "ffn.fc2.bias": f["fc2"]["bias"]}.items()})
    return sd


def test_stacked_conversion_round_trip():
    params = jax.tree.map(np.asarray, _params(TINY, 2))
    sd = _torch_state_dict(TINY, params)
    converted = var_params_from_torch(sd, TINY)
    assert jax.tree.structure(converted) == jax.tree.structure(params)
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(converted),
                                 jax.tree.leaves(params)):
        np.testing.assert_array_equal(got, want, err_msg=str(path))
    np.testing.assert_array_equal(converted["blocks"]["ffn"]["fc1"]["kernel"][2],
                                  sd["blocks.2.ffn.fc1.weight"].T)
    per_block = unstack_blocks(converted)
    assert sorted(k for k in per_block if k.startswith("blocks")) == [
        "blocks_0", "blocks_1", "blocks_2"]
    np.testing.assert_array_equal(per_block["blocks_1"]["attn"]["q_bias"],
                                  sd["blocks.1.attn.q_bias"])
    again = stack_blocks(per_block)
    for got, want in zip(jax.tree.leaves(again), jax.tree.leaves(converted)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"blocks_0 \.\.\. blocks_\{depth-1\}"):
        stack_blocks({k: v for k, v in per_block.items() if k != "blocks_1"})


@pytest.mark.parametrize("preset,mul", [(VARConfig.d16, 1e-3), (VARConfig.d20, 1e-3),
                                        (VARConfig.d24, 1e-4), (VARConfig.d30, 1e-5),
                                        (VARConfig.d36, 5e-6)])
def test_adaln_gamma_init_per_preset(preset, mul):
    assert preset().adaln_gamma_init == mul      # the reference README's --alng per depth
    assert VARConfig.from_depth(12).adaln_gamma_init == 1e-5   # the reference default


@pytest.mark.parametrize("shared_aln", [False, True])
def test_adaln_gamma_init_scales_the_gamma_rows(shared_aln):
    cfg = VARConfig(depth=2, embed_dim=256, num_heads=4, num_classes=10, patch_nums=(1, 2),
                    vocab_size=64, vae_channels=8, shared_aln=shared_aln)
    std = {}
    for mul in (1e-5, 1e-3):
        p = init_var_params(dataclasses.replace(cfg, adaln_gamma_init=mul), jax.random.key(0))
        if shared_aln:
            w = np.asarray(p["blocks"]["ada_gss"])[:, 0, 0]       # (depth, 6, C)
            std[mul] = (w[:, :2].std(), w[:, 2:].std())
        else:
            w = np.asarray(p["blocks"]["ada_lin"]["kernel"])      # (depth, C, 6C)
            std[mul] = (w[..., :2 * cfg.embed_dim].std(), w[..., 2 * cfg.embed_dim:].std())
    np.testing.assert_allclose(std[1e-3][0] / std[1e-5][0], 100, rtol=1e-3)
    np.testing.assert_allclose(std[1e-3][1], std[1e-5][1], rtol=1e-6)   # scale/shift untouched


def test_weights_converted_per_block_still_load_stacked(tmp_path):
    """A `var-jax convert` dir written before the scan (blocks_0 ...) loads as stacked params."""
    from var_jax.convert import load_weights
    from var_jax.weights.store import save_converted

    params = jax.tree.map(np.asarray, _params(TINY, 4))
    save_converted(tmp_path / "old", TINY, unstack_blocks(params))
    cfg, loaded = load_weights(tmp_path / "old", "var", allow_tampered=False)
    assert cfg == TINY and jax.tree.structure(loaded) == jax.tree.structure(params)
    for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(got, want)
