"""VAR transformer: preset shapes, logical axes, paper init, KV-cache path, dropout, errors."""
import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from var_jax.configs import VARConfig
from var_jax.var import VAR, init_kv_cache, init_var_params

ALLOWED_AXES = {"embed", "mlp", "qkv", "ada", "vocab", "classes", "cvae", "seq", "heads", "layers",
                None}
PRESETS = [VARConfig.d16, VARConfig.d20, VARConfig.d24, VARConfig.d30, VARConfig.d36]
SMALL = VARConfig(depth=1, embed_dim=64, num_heads=2, num_classes=10, patch_nums=(1, 2, 3),
                  vocab_size=64, vae_channels=8)


def _perturbed_params(cfg: VARConfig, seed: int = 0):
    """Paper init plus a deterministic wiggle, so no block is near identity (gammas ~1e-5)."""
    params = init_var_params(cfg, jax.random.key(seed))
    return jax.tree.map(
        lambda a: (np.asarray(a) + 0.05 * np.sin(np.arange(a.size).reshape(a.shape) + seed)
                   ).astype(np.float32), params)


def _inputs(cfg: VARConfig, B: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, cfg.num_classes, B).astype(np.int32)
    x = rng.normal(size=(B, cfg.seq_len - cfg.first_l, cfg.vae_channels)).astype(np.float32)
    return labels, x


@pytest.mark.parametrize("preset", PRESETS, ids=lambda f: f.__name__)
def test_preset_shapes_without_memory(preset):
    cfg = preset()
    params = jax.eval_shape(functools.partial(init_var_params, cfg), jax.random.key(0))
    B = 2
    labels = jax.ShapeDtypeStruct((B,), jnp.int32)
    x = jax.ShapeDtypeStruct((B, cfg.seq_len - 1, cfg.vae_channels), jnp.float32)
    logits = jax.eval_shape(lambda p, l, x: VAR(cfg).apply({"params": p}, l, x), params, labels, x)
    chex.assert_shape(logits, (B, cfg.seq_len, cfg.vocab_size))
    assert logits.dtype == jnp.float32
    C = cfg.embed_dim
    chex.assert_shape(params["pos_1LC"], (1, cfg.seq_len, C))
    chex.assert_shape(params["class_emb"]["embedding"], (cfg.num_classes + 1, C))
    chex.assert_shape(params["blocks"]["attn"]["mat_qkv"]["kernel"], (cfg.depth, C, 3 * C))
    assert ("shared_ada_lin" in params) == cfg.shared_aln
    # The block-sampling path: one scale with a full-length KV cache.
    caches = jax.eval_shape(lambda: init_kv_cache(cfg, 2 * B))
    chex.assert_shape(caches.k, (cfg.depth, 2 * B, cfg.seq_len, cfg.num_heads, cfg.head_dim))
    si = cfg.num_scales - 1
    pn = cfg.patch_nums[si]

    def last_scale(p, caches):
        model = VAR(cfg)
        cond, cond_blocks = model.apply({"params": p}, jnp.zeros((2 * B,), jnp.int32),
                                        method=VAR.conditioning)
        x = jnp.zeros((2 * B, pn * pn, C))
        return model.apply({"params": p}, si, x, cond, cond_blocks, caches,
                           method=VAR.forward_scale)

    logits, _ = jax.eval_shape(last_scale, params, caches)
    chex.assert_shape(logits, (2 * B, pn * pn, cfg.vocab_size))


def test_logical_axes_use_only_the_agreed_names():
    for cfg in (SMALL, SMALL.__class__(**{**SMALL.__dict__, "shared_aln": True})):
        boxed = jax.eval_shape(lambda k: init_var_params(cfg, k, boxed=True), jax.random.key(0))
        axes = nn.get_partition_spec(boxed)
        params = jax.eval_shape(functools.partial(init_var_params, cfg), jax.random.key(0))
        assert jax.tree.structure(params) == jax.tree.structure(
            axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
        flat = jax.tree_util.tree_flatten_with_path(
            axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0]
        shapes = dict(jax.tree_util.tree_flatten_with_path(params)[0])
        for path, spec in flat:
            assert set(spec) <= ALLOWED_AXES, (path, spec)
            assert len(spec) == len(shapes[path].shape), (path, spec)
    blk = axes["blocks"]   # stacked over the depth: a leading "layers" axis
    assert tuple(blk["attn"]["mat_qkv"]["kernel"]) == ("layers", "embed", "qkv")
    assert tuple(blk["attn"]["proj"]["kernel"]) == ("layers", "qkv", "embed")
    assert tuple(blk["ffn"]["fc2"]["kernel"]) == ("layers", "mlp", "embed")
    assert tuple(blk["attn"]["scale_mul_1H11"]) == ("layers", None, "heads", None, None)
    assert tuple(axes["head"]["kernel"]) == ("embed", "vocab")
    assert tuple(axes["pos_1LC"]) == (None, "seq", "embed")
    assert tuple(axes["class_emb"]["embedding"]) == ("classes", "embed")
    assert tuple(axes["word_embed"]["kernel"]) == ("cvae", "embed")
    assert tuple(axes["shared_ada_lin"]["kernel"]) == ("embed", "ada")


@pytest.mark.parametrize("shared_aln", [False, True])
def test_paper_init(shared_aln):
    cfg = VARConfig(depth=1, embed_dim=384, num_heads=4, num_classes=100, patch_nums=(1, 2),
                    vocab_size=1024, vae_channels=32, shared_aln=shared_aln)
    p = init_var_params(cfg, jax.random.key(1))
    assert {a.dtype for a in jax.tree.leaves(p)} == {jnp.dtype(jnp.float32)}
    p = jax.tree.map(np.asarray, p)
    C, std = cfg.embed_dim, math.sqrt(1 / (3 * cfg.embed_dim))

    def close(a, want, what):
        assert abs(a.std() - want) < 0.1 * want, f"{what}: std {a.std():.4g} vs {want:.4g}"

    blk = jax.tree.map(lambda a: a[0], p["blocks"])
    close(blk["attn"]["mat_qkv"]["kernel"], std, "mat_qkv")
    close(blk["ffn"]["fc1"]["kernel"], std, "fc1")
    close(blk["attn"]["proj"]["kernel"], std / math.sqrt(2 * cfg.depth), "proj")
    close(blk["ffn"]["fc2"]["kernel"], std / math.sqrt(2 * cfg.depth), "fc2")
    close(p["head"]["kernel"], 0.02 * std, "head")
    close(p["head_nm"]["ada_lin"]["kernel"], 0.5 * std, "head_nm")
    close(p["class_emb"]["embedding"], std, "class_emb")
    close(p["pos_1LC"], std, "pos_1LC")
    if shared_aln:
        gss = blk["ada_gss"][0, 0]
        close(gss[:2], 1e-5 / math.sqrt(C), "ada_gss gammas")
        close(gss[2:], 0.5 / math.sqrt(C), "ada_gss scale/shift")
        close(p["shared_ada_lin"]["kernel"], std, "shared_ada_lin")
    else:
        close(blk["ada_lin"]["kernel"][:, :2 * C], 1e-5 * std, "ada_lin gammas")
        close(blk["ada_lin"]["kernel"][:, 2 * C:], 0.5 * std, "ada_lin scale/shift")
        assert not blk["ada_lin"]["bias"].any()
    np.testing.assert_allclose(blk["attn"]["scale_mul_1H11"], np.log(4.0), rtol=1e-6)
    for leaf in (blk["attn"]["q_bias"], blk["attn"]["v_bias"], p["head"]["bias"],
                 blk["ffn"]["fc1"]["bias"], p["word_embed"]["bias"]):
        assert not leaf.any()


@pytest.mark.parametrize("name", ["var_tiny_l2norm", "var_tiny_saln"])
def test_kv_cached_scales_equal_teacher_forcing(name, golden_var):
    cfg, params, io, _ = golden_var(name)
    _check_cached_equals_teacher_forcing(cfg, params, io["labels"], io["x_BLCv_wo_first_l"])


def test_kv_cached_scales_equal_teacher_forcing_without_l2_norm():
    cfg = VARConfig(**{**SMALL.__dict__, "attn_l2_norm": False})
    params = _perturbed_params(cfg, 3)
    _check_cached_equals_teacher_forcing(cfg, params, *_inputs(cfg, 3))


def _check_cached_equals_teacher_forcing(cfg, params, labels, x_BLCv):
    model, vp = VAR(cfg), {"params": params}
    want = np.asarray(jax.jit(model.apply)(vp, labels, x_BLCv))

    @jax.jit
    def cached(labels, x_BLCv):
        cond, cond_blocks = model.apply(vp, labels, method=VAR.conditioning)
        caches = init_kv_cache(cfg, labels.shape[0])
        x = model.apply(vp, cond, method=VAR.embed_first)
        out = []
        for si in range(cfg.num_scales):
            logits, caches = model.apply(vp, si, x, cond, cond_blocks, caches,
                                         method=VAR.forward_scale)
            out.append(logits)
            if si + 1 < cfg.num_scales:
                b, e = cfg.begin_ends[si + 1]
                x = model.apply(vp, si + 1, x_BLCv[:, b - cfg.first_l:e - cfg.first_l],
                                method=VAR.embed_scale)
        return jnp.concatenate(out, axis=1)

    got = np.asarray(cached(labels, x_BLCv))
    err = np.abs(got - want).max()
    assert err <= 1e-5, f"KV-cached logits differ from teacher forcing by {err:.3g}"


def test_dropout_only_with_a_dropout_rng():
    cfg = VARConfig(**{**SMALL.__dict__, "cond_drop_rate": 0.999999, "drop_path_rate": 0.0})
    params = _perturbed_params(cfg)
    labels, x = _inputs(cfg, 4)
    apply = jax.jit(VAR(cfg).apply)
    plain = apply({"params": params}, labels, x)
    null = apply({"params": params}, np.full_like(labels, cfg.num_classes), x)
    dropped = apply({"params": params}, labels, x, rngs={"dropout": jax.random.key(5)})
    chex.assert_trees_all_close(dropped, null, atol=1e-6)
    assert np.abs(np.asarray(plain) - np.asarray(null)).max() > 1e-3

    # Drop-path rates grow linearly from 0 at the first block, so this needs depth >= 2.
    cfg = VARConfig(**{**SMALL.__dict__, "depth": 2, "cond_drop_rate": 0.0,
                       "drop_path_rate": 0.5})
    params = _perturbed_params(cfg)
    apply = jax.jit(VAR(cfg).apply)
    plain = apply({"params": params}, labels, x)
    no_drop_path = VARConfig(**{**cfg.__dict__, "drop_path_rate": 0.0})
    chex.assert_trees_all_close(plain, jax.jit(VAR(no_drop_path).apply)({"params": params},
                                                                      labels, x), atol=1e-6)
    with_dp = apply({"params": params}, labels, x, rngs={"dropout": jax.random.key(6)})
    assert np.abs(np.asarray(with_dp) - np.asarray(plain)).max() > 1e-6


def test_bfloat16_compute_keeps_float32_logits():
    cfg32 = SMALL
    cfg16 = VARConfig(**{**SMALL.__dict__, "dtype": "bfloat16"})
    params = _perturbed_params(cfg32, 1)
    labels, x = _inputs(cfg32, 2)
    ref = jax.jit(VAR(cfg32).apply)({"params": params}, labels, x)
    got = jax.jit(VAR(cfg16).apply)({"params": params}, labels, x)
    assert got.dtype == jnp.float32
    chex.assert_tree_all_finite(got)
    rel = float(jnp.abs(got - ref).max() / jnp.abs(ref).max())
    assert rel < 0.05, f"bf16 logits relative error {rel:.3g}"


def test_bad_inputs_raise_value_errors():
    params = init_var_params(SMALL, jax.random.key(0))
    labels, x = _inputs(SMALL, 2)
    model = VAR(SMALL)
    with pytest.raises(ValueError, match=r"labels \[11\] are outside \[0, 10\]"):
        model.apply({"params": params}, np.array([3, 11]), x)
    with pytest.raises(ValueError, match=r"labels_B has shape \(3,\)"):
        model.apply({"params": params}, np.array([1, 2, 3]), x)
    with pytest.raises(ValueError, match=r"x_BLCv_wo_first_l has shape \(2, 12, 8\)"):
        model.apply({"params": params}, labels, x[:, :-1])
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        VARConfig(depth=2, embed_dim=100, num_heads=3)
