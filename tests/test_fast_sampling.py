"""Draft-and-refine and last-scale pruning (var_jax/fast_sampling.py) on the golden tiny models."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from golden import load_vae, load_var
from var_jax import sample, sampling
from var_jax.fast_sampling import (cache_begins, farthest_tokens, kept_counts, prefill, run_scale,
                                   upsample_tokens)
from var_jax.var import VAR, init_kv_cache

LABELS = np.array([3, 7])
OPTS = dict(cfg=1.5, top_k=20, top_p=0.9, return_indices=True)


def _models():
    drafter_cfg, drafter, _, _ = load_var("var_tiny_l2norm")
    refiner_cfg, refiner, _, _ = load_var("var_tiny_saln")
    vae_cfg, vae = load_vae()
    return drafter_cfg, drafter, refiner_cfg, refiner, vae_cfg, vae


def _count_traces(monkeypatch):
    """A list that grows by one each time filter_logits is traced (once per scale per trace)."""
    traces, filter_logits = [], sampling.filter_logits
    monkeypatch.setattr(sampling, "filter_logits", lambda *a: traces.append(1) or filter_logits(*a))
    sampling.compiled_sampler.cache_clear()
    return traces


def test_draft_all_scales_and_prune_ratio_zero_equal_plain_bit_for_bit():
    dcfg, dp, rcfg, rp, vcfg, vp = _models()
    key = jax.random.key(5)
    imgs, idx = sample(dp, vp, dcfg, vcfg, LABELS, rng=key, **OPTS)
    for extra in (dict(refiner=(rp, rcfg), draft_scales=dcfg.num_scales),
                  dict(prune_ratio=0.0, prune_scales=3)):
        imgs2, idx2 = sample(dp, vp, dcfg, vcfg, LABELS, rng=key, **OPTS, **extra)
        np.testing.assert_array_equal(np.asarray(idx2), np.asarray(idx), err_msg=str(extra))
        np.testing.assert_array_equal(np.asarray(imgs2), np.asarray(imgs), err_msg=str(extra))


def test_draft_refine_drafts_then_refines_in_one_compiled_program(monkeypatch):
    dcfg, dp, rcfg, rp, vcfg, vp = _models()
    key = jax.random.key(9)
    _, plain_idx = sample(dp, vp, dcfg, vcfg, LABELS, rng=key, **OPTS)
    traces = _count_traces(monkeypatch)
    N = 2
    end = dcfg.begin_ends[N][0]
    for c in (1.5, 3.0, 1.5):
        _, idx = sample(dp, vp, dcfg, vcfg, LABELS, rng=key, refiner=(rp, rcfg), draft_scales=N,
                        **{**OPTS, "cfg": c})
        if c == 1.5:
            np.testing.assert_array_equal(np.asarray(idx[:, :end]), np.asarray(plain_idx[:, :end]))
            assert not np.array_equal(np.asarray(idx), np.asarray(plain_idx)), "refiner unused"
    assert len(traces) == dcfg.num_scales, f"traced {len(traces) / dcfg.num_scales} times"


def test_refiner_prefill_equals_scale_by_scale():
    _, _, cfg, params, _, _ = _models()
    model, vp, N, B = VAR(cfg), {"params": params}, 3, 2
    rng = np.random.default_rng(0)
    labels_2B = jnp.array([3, cfg.num_classes, 7, cfg.num_classes])
    next_inputs = [jnp.asarray(rng.normal(size=(B, pn * pn, cfg.vae_channels)), jnp.float32)
                   for pn in cfg.patch_nums[1:N + 1]]

    def by_scales():
        cond_BD, cond_blocks = model.apply(vp, labels_2B, method=VAR.conditioning)
        kv, x = init_kv_cache(cfg, 2 * B), model.apply(vp, cond_BD, method=VAR.embed_first)
        for si in range(N + 1):
            logits, kv = model.apply(vp, si, x, cond_BD, cond_blocks, kv,
                                     method=VAR.forward_scale)
            if si == N - 1:
                drafted_logits, drafted_kv = logits, kv
            if si < N:
                x = jnp.repeat(model.apply(vp, si + 1, next_inputs[si], method=VAR.embed_scale),
                               2, 0)
        return drafted_logits, drafted_kv, logits

    def by_prefill():
        cond_BD, cond_blocks = model.apply(vp, labels_2B, method=VAR.conditioning)
        h, kv = prefill(model, vp, cond_BD, cond_blocks, next_inputs, init_kv_cache(cfg, 2 * B), N)
        drafted_logits = model.apply(vp, h, cond_BD, method=VAR.logits)
        x = jnp.repeat(model.apply(vp, N, next_inputs[N - 1], method=VAR.embed_scale), 2, 0)
        logits, _ = model.apply(vp, N, x, cond_BD, cond_blocks, kv, method=VAR.forward_scale)
        return drafted_logits, kv, logits

    want, got = jax.jit(by_scales)(), jax.jit(by_prefill)()
    end = cfg.begin_ends[N - 1][1]
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    np.testing.assert_allclose(got[1].k[:, :, :end], want[1].k[:, :, :end], atol=1e-5)
    np.testing.assert_allclose(got[1].v[:, :, :end], want[1].v[:, :, :end], atol=1e-5)
    assert not np.asarray(got[1].k[:, :, end:]).any(), "prefill wrote past the drafted scales"
    np.testing.assert_allclose(got[2], want[2], atol=1e-5)   # the first refined scale


def test_kept_counts_and_packed_cache():
    pns = (1, 2, 3, 4)
    assert kept_counts(pns, 0.5, 2) == (1, 4, 4, 8)      # round(4.5) = 4 (banker's), 8 of 16
    assert kept_counts(pns, 0.0, 3) == (1, 4, 9, 16)
    assert cache_begins((1, 4, 4, 8)) == (0, 1, 5, 9)


def test_farthest_tokens_and_pruned_scale():
    cfg, params, _, _, _, _ = _models()
    model, vp, B = VAR(cfg), {"params": params}, 2
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2 * B, 16, cfg.embed_dim)), jnp.float32)
    idx = np.asarray(farthest_tokens(x, 6))
    d = ((np.asarray(x) - np.asarray(x).mean(1, keepdims=True)) ** 2).sum(-1)
    np.testing.assert_array_equal(idx, np.sort(np.argsort(-d, axis=1)[:, :6], axis=1))

    h_prev = jnp.asarray(rng.normal(size=(2 * B, 9, cfg.embed_dim)), jnp.float32)
    labels_2B = jnp.array([3, cfg.num_classes, 7, cfg.num_classes])
    _, cond_blocks = model.apply(vp, labels_2B, method=VAR.conditioning)
    kv = init_kv_cache(cfg, 2 * B)
    h, kv_out = jax.jit(lambda x, kv: run_scale(model, vp, x, cond_blocks, kv, keep=6,
                                                 cache_begin=5, h_prev_BpC=h_prev))(x, kv)
    up = np.asarray(upsample_tokens(h_prev, 4))
    pruned = np.ones((2 * B, 16), bool)
    np.put_along_axis(pruned, idx, False, 1)
    np.testing.assert_array_equal(np.asarray(h)[pruned], up[pruned])
    x_kept = jnp.take_along_axis(x, jnp.asarray(idx)[..., None], 1)
    h_kept, kv_kept = model.apply(vp, x_kept, cond_blocks, kv, 5, method=VAR.blocks_cached)
    np.testing.assert_allclose(np.take_along_axis(np.asarray(h), idx[..., None], 1), h_kept,
                               atol=1e-5)
    written = np.asarray(kv_out.k).any(axis=(0, 1, 3, 4))
    at = np.arange(cfg.seq_len)
    np.testing.assert_array_equal(written, (at >= 5) & (at < 11))   # the 6 kept, packed at 5
    np.testing.assert_allclose(kv_out.k, kv_kept.k, atol=1e-5)


def test_pruned_sampling_keeps_unpruned_scales_and_compiles_once(monkeypatch):
    dcfg, dp, _, _, vcfg, vp = _models()
    key = jax.random.key(2)
    _, plain_idx = sample(dp, vp, dcfg, vcfg, LABELS, rng=key, **OPTS)
    traces = _count_traces(monkeypatch)
    for c in (1.5, 2.5):
        _, idx = sample(dp, vp, dcfg, vcfg, LABELS, rng=key, prune_ratio=0.5, prune_scales=1,
                        **{**OPTS, "cfg": c})
        if c == 1.5:
            end = dcfg.begin_ends[-1][0]
            np.testing.assert_array_equal(np.asarray(idx[:, :end]), np.asarray(plain_idx[:, :end]))
    assert len(traces) == dcfg.num_scales


@pytest.mark.parametrize("extra,match", [
    (dict(draft_scales=2), "needs a refiner"),
    (dict(refiner="R", draft_scales=0), r"\[1, 4\]"),
    (dict(refiner="R", draft_scales=3, prune_scales=2, prune_ratio=0.5), "prunes drafted"),
    (dict(prune_ratio=1.0, prune_scales=1), r"\[0, 1\)"),
    (dict(prune_ratio=0.5, prune_scales=4), r"\[0, 3\]"),
])
def test_bad_fast_options_raise(extra, match):
    dcfg, dp, rcfg, rp, vcfg, vp = _models()
    if extra.get("refiner") == "R":
        extra = {**extra, "refiner": (rp, rcfg)}
    with pytest.raises(ValueError, match=match):
        sample(dp, vp, dcfg, vcfg, LABELS, rng=jax.random.key(0), **extra)
