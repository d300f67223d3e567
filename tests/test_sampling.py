"""Sampler: top-k/top-p vs the reference rule, per-image keys (N in a batch = N of 1), errors."""
import chex
import jax
import numpy as np
import pytest

from var_jax import VARConfig, sample
from var_jax.sampling import filter_logits, per_image_keys


def _reference_filter(logits, top_k, top_p):
    """NumPy transcription of the reference's sample_with_top_k_top_p_ masking (float32)."""
    logits = logits.astype(np.float32).copy()
    V = logits.shape[-1]
    if top_k > 0:
        kth = -np.sort(-logits, axis=-1)[..., top_k - 1:top_k]
        logits[logits < kth] = -np.inf
    if top_p > 0:
        order = np.argsort(logits, axis=-1, kind="stable")
        srt = np.take_along_axis(logits, order, -1)
        e = np.exp(srt - srt.max(-1, keepdims=True))
        remove = np.cumsum(e / e.sum(-1, keepdims=True), -1) <= 1 - top_p
        remove[..., -1] = False
        mask = np.zeros_like(remove)
        np.put_along_axis(mask, order, remove, -1)
        logits[mask] = -np.inf
    assert logits.shape[-1] == V
    return logits


@pytest.mark.parametrize("top_k,top_p", [(0, 0.0), (1, 0.0), (10, 0.0), (0, 0.5), (0, 0.96),
                                         (40, 0.9), (64, 0.8), (500, 0.0)])
def test_filter_matches_reference_rule(top_k, top_p):
    logits = np.random.default_rng(0).normal(size=(3, 7, 64)).astype(np.float32) * 3
    got = np.asarray(jax.jit(filter_logits, static_argnums=(1, 2))(logits, top_k, top_p))
    want = _reference_filter(logits, min(top_k, 64), top_p)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_array_equal(got[~np.isinf(got)], logits[~np.isinf(want)])
    assert (~np.isinf(got)).any(-1).all(), "every position keeps at least one token"


def test_batch_of_n_equals_n_batches_of_one(golden_var, golden_vae):
    var_cfg, var_params, io, _ = golden_var("var_tiny_l2norm")
    vae_cfg, vae_params = golden_vae
    labels = np.array([3, 3, 0])
    keys = jax.random.split(jax.random.key(11), 3)
    opts = dict(cfg=2.0, top_k=20, top_p=0.9, more_smooth=True, return_indices=True)
    imgs, idx = sample(var_params, vae_params, var_cfg, vae_cfg, labels, rng=keys, **opts)
    chex.assert_shape(imgs, (3, 64, 64, 3))
    chex.assert_shape(idx, (3, var_cfg.seq_len))
    assert float(imgs.min()) >= 0.0 and float(imgs.max()) <= 1.0
    assert not np.array_equal(idx[0], idx[1]), "same class, different keys: different samples"
    for i in range(3):
        img1, idx1 = sample(var_params, vae_params, var_cfg, vae_cfg, labels[i:i + 1],
                            rng=keys[i:i + 1], **opts)
        np.testing.assert_array_equal(idx1[0], idx[i])
        chex.assert_trees_all_close(img1[0], imgs[i], atol=1e-4)   # batch-size float noise
    # A single key is split into one key per image.
    imgs2, idx2 = sample(var_params, vae_params, var_cfg, vae_cfg, labels,
                         rng=jax.random.key(11), **opts)
    np.testing.assert_array_equal(idx2, idx)


def test_per_image_keys_forms():
    k = jax.random.key(3)
    np.testing.assert_array_equal(jax.random.key_data(per_image_keys(k, 4)),
                                  jax.random.key_data(jax.random.split(k, 4)))
    raw = jax.random.key_data(jax.random.split(k, 2))
    assert per_image_keys(raw, 2).shape == (2,)
    assert per_image_keys(jax.random.key_data(k), 5).shape == (5,)
    with pytest.raises(ValueError, match=r"one per image \(3,\)"):
        per_image_keys(jax.random.split(k, 2), 3)
    with pytest.raises(ValueError, match="rng must be a jax.random.key"):
        per_image_keys(np.arange(4.0), 2)


def test_bad_arguments_raise_value_errors(golden_var, golden_vae):
    var_cfg, var_params, _, _ = golden_var("var_tiny_l2norm")
    vae_cfg, vae_params = golden_vae
    key = jax.random.key(0)

    def call(labels=(1, 2), vcfg=var_cfg, **kw):
        return sample(var_params, vae_params, vcfg, vae_cfg, labels, rng=key, **kw)

    with pytest.raises(ValueError, match=r"labels \[11\] are outside \[0, 10\]"):
        call(labels=(1, 11))
    with pytest.raises(ValueError, match="labels is empty"):
        call(labels=np.zeros((0,), np.int32))
    with pytest.raises(ValueError, match="1-D array"):
        call(labels=[[1, 2]])
    with pytest.raises(ValueError, match="top_p=1.5"):
        call(top_p=1.5)
    with pytest.raises(ValueError, match="top_k=-1"):
        call(top_k=-1)
    with pytest.raises(ValueError, match="cfg=nan"):
        call(cfg=float("nan"))
    with pytest.raises(ValueError, match="VARConfig and VQVAEConfig disagree"):
        call(vcfg=VARConfig(**{**var_cfg.__dict__, "vocab_size": 128}))
