"""SelfAttention vs a NumPy transcription of the reference, block-causal mask and the KV-cache path."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from var_jax.nn.attention import KVCache, SelfAttention, block_causal_mask

PATCH_NUMS = (1, 2, 3)
L, C, H = 14, 32, 4


def _params(rng, l2: bool, scale_mul=None):
    p = {"mat_qkv": {"kernel": rng.normal(size=(C, 3 * C)).astype(np.float32) * 0.3},
         "q_bias": rng.normal(size=(C,)).astype(np.float32),
         "v_bias": rng.normal(size=(C,)).astype(np.float32),
         "proj": {"kernel": rng.normal(size=(C, C)).astype(np.float32) * 0.2,
                  "bias": rng.normal(size=(C,)).astype(np.float32)}}
    if l2:
        p["scale_mul_1H11"] = (rng.normal(size=(1, H, 1, 1)) if scale_mul is None
                               else np.full((1, H, 1, 1), scale_mul)).astype(np.float32)
    return p


def _reference(p, x, l2: bool, mask_LL):
    """NumPy float64 transcription of the reference SelfAttention.forward."""
    B = x.shape[0]
    hd = C // H
    bias = np.concatenate([p["q_bias"], np.zeros(C), p["v_bias"]])
    qkv = (x @ p["mat_qkv"]["kernel"] + bias).reshape(B, -1, 3, H, hd).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv.astype(np.float64)
    if l2:
        q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
        k = k / np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
        q = q * np.exp(np.minimum(p["scale_mul_1H11"], math.log(100)))
        scale = 1.0
    else:
        scale = 0.25 / math.sqrt(hd)
    att = q @ k.transpose(0, 1, 3, 2) * scale + np.where(mask_LL, 0.0, -np.inf)
    att = np.exp(att - att.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    out = (att @ v).transpose(0, 2, 1, 3).reshape(B, -1, C)
    return out @ p["proj"]["kernel"] + p["proj"]["bias"]


@pytest.mark.parametrize("l2,scale_mul", [(True, None), (True, 10.0), (False, None)])
def test_matches_reference_with_block_causal_mask(l2, scale_mul):
    rng = np.random.default_rng(0)
    p = _params(rng, l2, scale_mul)
    x = rng.normal(size=(2, L, C)).astype(np.float32)
    mask = block_causal_mask(PATCH_NUMS)
    attn = SelfAttention(C, H, attn_l2_norm=l2)
    got, cache = jax.jit(lambda p, x: attn.apply({"params": p}, x, mask_11LL=mask))(p, x)
    assert cache is None and got.dtype == jnp.float32
    want = _reference(p, x, l2, mask[0, 0])
    err = np.abs(np.asarray(got) - want).max()
    assert err < 1e-5, f"attention max abs err {err:.3g}"


def test_block_causal_mask():
    mask = block_causal_mask((1, 2))[0, 0]
    want = np.array([[1, 0, 0, 0, 0]] + [[1, 1, 1, 1, 1]] * 4, bool)
    np.testing.assert_array_equal(mask, want)


def test_kv_cache_path_equals_masked_attention():
    rng = np.random.default_rng(1)
    p = _params(rng, True)
    x = rng.normal(size=(2, L, C)).astype(np.float32)
    attn = SelfAttention(C, H, attn_l2_norm=True)
    full, _ = attn.apply({"params": p}, x, mask_11LL=block_causal_mask(PATCH_NUMS))

    @jax.jit
    def by_scale(p, x):
        cache = KVCache(jnp.zeros((2, L, H, C // H)), jnp.zeros((2, L, H, C // H)))
        outs, begin = [], 0
        for pn in PATCH_NUMS:
            out, cache = attn.apply({"params": p}, x[:, begin:begin + pn * pn], kv_cache=cache,
                                    cache_begin=begin)
            outs.append(out)
            begin += pn * pn
        return jnp.concatenate(outs, 1), cache

    got, cache = by_scale(p, x)
    err = float(jnp.abs(got - full).max())
    assert err < 1e-5, f"cached vs masked max abs err {err:.3g}"
    assert bool(jnp.all(jnp.abs(cache.v).sum(axis=(0, 2, 3)) > 0))   # every slot written


def test_cache_overflow_is_a_value_error():
    p = _params(np.random.default_rng(2), True)
    cache = KVCache(jnp.zeros((1, 4, H, C // H)), jnp.zeros((1, 4, H, C // H)))
    with pytest.raises(ValueError, match=r"cannot hold tokens \[1, 5\)"):
        SelfAttention(C, H).apply({"params": p}, jnp.zeros((1, 4, C)), kv_cache=cache,
                                  cache_begin=1)
