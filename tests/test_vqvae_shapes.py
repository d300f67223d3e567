"""Tokenizer shapes/dtypes over several configs (traced only), input checks, training gradients."""
import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from var_jax.configs import VQVAEConfig
from var_jax.vqvae import VQVAE

CONFIGS = {
    "golden": VQVAEConfig(vocab_size=64, z_channels=8, ch=32, patch_nums=(1, 2, 3, 4),
                          image_size=64),
    # non-divisible scale steps, 4 levels (x8), one phi per scale
    "uneven": VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 1, 2, 2),
                          num_res_blocks=1, patch_nums=(1, 2, 3, 5, 8), image_size=64,
                          share_quant_resi=0),
    # bf16 compute, no attention, one shared phi, cosine lookup
    "bf16": VQVAEConfig(vocab_size=16, z_channels=4, ch=32, ch_mult=(1, 2), patch_nums=(1, 3, 8),
                        image_size=16, share_quant_resi=1, using_sa=False, using_mid_sa=False,
                        using_znorm=True, dtype="bfloat16"),
    "res256": VQVAEConfig.res256(),
}


@functools.lru_cache(maxsize=None)
def shapes_of(cfg: VQVAEConfig, batch: int = 2):
    """Output shapes of every public method, by tracing only (jax.eval_shape)."""
    model = VQVAE(cfg)
    imgs = jax.ShapeDtypeStruct((batch, cfg.image_size, cfg.image_size, 3), jnp.float32)
    params = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), imgs)
    apply = lambda method, *a: jax.eval_shape(
        functools.partial(model.apply, method=method), params, *a)
    idx = apply("encode_indices", imgs)
    fhats = apply("indices_to_fhat", idx)
    n, C = cfg.patch_nums[-1], cfg.z_channels
    h = jax.ShapeDtypeStruct((batch, cfg.patch_nums[0] ** 2, C), jnp.float32)
    f_hat = jax.ShapeDtypeStruct((batch, n, n, C), jnp.float32)
    return {
        "params": params["params"],
        "f": apply("encode_f", imgs), "idx": idx, "fhats": fhats,
        "recon": apply("decode_fhat", fhats[-1]),
        "tf": apply("teacher_forcing_input", idx),
        "codebook": apply("codebook"),
        "next": jax.eval_shape(functools.partial(model.apply, method="next_scale_input", si=0),
                               params, f_hat_BhwC=f_hat, h_BlC=h),
        "train": jax.eval_shape(functools.partial(model.apply, train=True), params, imgs),
    }


@pytest.mark.parametrize("name", list(CONFIGS))
def test_method_shapes_and_dtypes(name):
    cfg, B = CONFIGS[name], 2
    out = shapes_of(cfg)
    n, C, H, K, V = (cfg.patch_nums[-1], cfg.z_channels, cfg.image_size, cfg.num_scales,
                     cfg.vocab_size)
    chex.assert_shape(out["f"], (B, n, n, C))
    chex.assert_shape(out["idx"], [(B, p * p) for p in cfg.patch_nums])
    chex.assert_shape(out["fhats"], [(B, n, n, C)] * K)
    chex.assert_shape(out["recon"], (B, H, H, 3))
    chex.assert_shape(out["tf"], (B, cfg.seq_len - cfg.patch_nums[0] ** 2, C))
    chex.assert_shape(out["codebook"], (V, C))
    chex.assert_shape(out["next"], [(B, n, n, C), (B, cfg.patch_nums[1] ** 2, C)])
    train = out["train"]
    chex.assert_shape([train["recon"], train["vq_loss"], train["usage_per_scale"],
                       train["hist_per_scale"]], [(B, H, H, 3), (), (K,), (K, V)])
    assert all(i.dtype == jnp.int32 for i in out["idx"])
    floats = [out["f"], out["recon"], out["tf"], train["recon"], train["vq_loss"]] + out["fhats"]
    assert all(x.dtype == jnp.float32 for x in floats), [x.dtype for x in floats]
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(out["params"]))
    assert len(out["params"]["quantize"]) == 1 + cfg.num_phi


def test_released_tokenizer_size():
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes_of(CONFIGS["res256"])[
        "params"]))
    assert 108e6 < n < 110e6, n  # vae_ch160v4096z32 holds ~109M weights


@pytest.fixture(scope="module")
def tiny():
    cfg = dataclasses.replace(CONFIGS["bf16"], dtype="float32", num_res_blocks=1)
    model, rng = VQVAE(cfg), np.random.default_rng(0)
    imgs = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
    # random weights of the right shapes (cheaper than compiling init)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(1), imgs)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.2, s.dtype), shapes)
    return cfg, model, params, imgs


def test_input_errors_name_the_value(tiny):
    cfg, model, params, imgs = tiny
    with pytest.raises(ValueError, match=r"\(B, 16, 16, 3\).*got shape \(2, 32, 32, 3\)"):
        model.apply(params, jnp.zeros((2, 32, 32, 3)), method="encode_indices")
    with pytest.raises(ValueError, match="got shape"):
        model.apply(params, jnp.zeros((2, 16, 16, 4)), method="encode_f")
    with pytest.raises(ValueError, match="uint8"):
        model.apply(params, jnp.zeros((2, 16, 16, 3), jnp.uint8), method="encode_f")
    idx = [jnp.zeros((2, p * p), jnp.int32) for p in cfg.patch_nums]
    with pytest.raises(ValueError, match="expected 3 index maps"):
        model.apply(params, idx[:2], method="indices_to_fhat")
    bad = idx[:2] + [idx[2].at[0, 5].set(cfg.vocab_size)]
    with pytest.raises(ValueError, match=r"scale 2 has values in \[0, 16\].*\[0, 15\]"):
        model.apply(params, bad, method="indices_to_fhat")
    with pytest.raises(ValueError, match="scale 0 has values"):
        model.apply(params, [idx[0] - 1] + idx[1:], method="teacher_forcing_input")
    with pytest.raises(ValueError, match=r"f_hat must be \(B, 8, 8, 4\)"):
        model.apply(params, jnp.zeros((2, 4, 4, 4)), method="decode_fhat")


def test_training_forward_gradients(tiny):
    cfg, model, params, imgs = tiny

    @jax.jit
    def grads(params):
        def loss(params):
            out = model.apply(params, imgs, train=True)
            return jnp.mean(jnp.square(out["recon"] - imgs)) + out["vq_loss"], out
        return jax.grad(loss, has_aux=True)(params)

    g, out = grads(params)
    g = g["params"]
    norm = lambda tree: float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))
    # the straight-through estimator carries the reconstruction loss into the encoder,
    # the vq loss reaches the codebook and the phi
    for part in (g["encoder"], g["quant_conv"], g["decoder"], g["post_quant_conv"],
                 g["quantize"]["embedding"], g["quantize"]["phi_0"]):
        assert norm(part) > 0
    chex.assert_tree_all_finite(g)
    hist = np.asarray(out["hist_per_scale"])
    assert hist.sum(1).tolist() == [2 * p * p for p in cfg.patch_nums]
    assert float(jnp.abs(out["recon"]).max()) > 0  # unclamped decoder output, finite
