"""Exact top-k / top-p (nucleus) logit filtering, and categorical sampling, without sorting.

Both thresholds are found by bisection over the 32 bits of an order-preserving uint32 image of
the float32 logits: a fixed 32 compare-and-reduce passes over V each, where `lax.top_k(k=900)`
or a sort of V=4096 is far slower on CPU and not cheap on accelerators either.

Semantics (the reference's `sample_with_top_k_top_p_`):
  top-k: keep every logit >= the k-th largest.
  top-p: over the top-k-filtered softmax, drop a token if the ascending cumulative probability
         up to and including it is <= 1 - top_p; the most likely token is always kept.
  top_k = 0 / top_p = 0 disable each.
Ties: equal logits are kept or dropped together (a threshold rule). The reference decides
ties at the top-p boundary by its (unstable) sort order, so it may keep some copies of a tied
value and drop others; on continuous logits the two agree exactly.

`sample_categorical` draws a token by inverse CDF: one uniform per row and a bisection over
the 12 bits of the index, instead of the V gumbel draws, two logs each, of
`jax.random.categorical`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_SIGN = np.uint32(0x80000000)   # numpy: importing the sampler starts no JAX backend


def ordered_bits(x_NV: jax.Array) -> jax.Array:
    """uint32 keys with key(a) < key(b) iff a < b for float32 a, b (-0.0 sorts below +0.0)."""
    u = jax.lax.bitcast_convert_type(x_NV.astype(jnp.float32), jnp.uint32)
    return jnp.where(u & _SIGN, ~u, u | _SIGN)


def _bisect_max(pred, shape) -> jax.Array:
    """Largest uint32 t (per row) with pred(t) true, for pred true on a prefix [0, t*] (0 if
    none). pred maps (N, 1) candidates to (N, 1) bools."""
    def body(i, t):
        cand = t | (jnp.uint32(1) << (31 - i).astype(jnp.uint32))
        return jnp.where(pred(cand), cand, t)
    return jax.lax.fori_loop(0, 32, body, jnp.zeros(shape, jnp.uint32))


def kth_largest_key(key_NV: jax.Array, k: int) -> jax.Array:
    """(N, 1) key of the k-th largest entry per row: the largest t with #{key >= t} >= k."""
    return _bisect_max(lambda t: jnp.sum(key_NV >= t, -1, keepdims=True, dtype=jnp.int32) >= k,
                       key_NV.shape[:-1] + (1,))


def nucleus_cut_key(key_NV: jax.Array, prob_NV: jax.Array, top_p: float) -> jax.Array:
    """(N, 1) the largest t with sum(prob[key <= t]) <= 1 - top_p: tokens with key <= t are
    dropped (key 0 is a NaN bit pattern, so t = 0 drops nothing from finite logits)."""
    limit = 1.0 - top_p
    return _bisect_max(
        lambda t: jnp.sum(jnp.where(key_NV <= t, prob_NV, 0.0), -1, keepdims=True) <= limit,
        key_NV.shape[:-1] + (1,))


def filter_logits(logits_BlV: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """Set to -inf every logit outside top-k and outside the top-p nucleus (module docstring)."""
    V = logits_BlV.shape[-1]
    k = top_k if 0 < top_k < V else V
    if k == V and top_p <= 0:
        return logits_BlV
    lead = logits_BlV.shape[:-1]
    x_NV = logits_BlV.reshape(-1, V).astype(jnp.float32)
    key_NV = ordered_bits(x_NV)
    keep_NV = jnp.ones(x_NV.shape, bool)
    if k < V:
        keep_NV = key_NV >= kth_largest_key(key_NV, k)
    if top_p > 0:
        top_N1 = jnp.max(x_NV, -1, keepdims=True)
        e_NV = jnp.where(keep_NV, jnp.exp(x_NV - top_N1), 0.0)
        prob_NV = e_NV / jnp.sum(e_NV, -1, keepdims=True)
        cut_N1 = nucleus_cut_key(key_NV, prob_NV, top_p)
        keep_NV = keep_NV & ((key_NV > cut_N1) | (x_NV >= top_N1))
    out_NV = jnp.where(keep_NV, x_NV, -jnp.inf).astype(logits_BlV.dtype)
    return out_NV.reshape(lead + (V,))


def sample_categorical(u_N: jax.Array, logits_NV: jax.Array) -> jax.Array:
    """(N,) int32: per row the token j with P(j) = softmax(logits)_j, by inverse CDF at u.

    u_N: uniforms in [0, 1). j is the largest index whose exclusive prefix mass
    sum(w[:j]), w = exp(logits - max), is <= u * sum(w). Each prefix mass is one reduction of
    w with the tail zeroed, so it is monotone in j and unchanged by a token of weight 0:
    a -inf logit (filtered out) is never drawn, except that rounding may let u * sum(w) reach
    the mass before the last kept token, so the draw is capped at the last kept token.
    """
    V = logits_NV.shape[-1]
    x_NV = logits_NV.astype(jnp.float32)
    w_NV = jnp.exp(x_NV - jnp.max(x_NV, -1, keepdims=True))
    target_N1 = u_N[:, None] * jnp.sum(w_NV, -1, keepdims=True)
    iota_V = jnp.arange(V, dtype=jnp.uint32)
    bits = max(1, (V - 1).bit_length())

    def mass_before(t_N1):
        return jnp.sum(jnp.where(iota_V < t_N1, w_NV, 0.0), -1, keepdims=True)

    def body(i, t):
        cand = t | (jnp.uint32(1) << (bits - 1 - i).astype(jnp.uint32))
        return jnp.where((cand < V) & (mass_before(cand) <= target_N1), cand, t)

    j_N1 = jax.lax.fori_loop(0, bits, body, jnp.zeros(target_N1.shape, jnp.uint32))
    last_kept_N1 = jnp.max(jnp.where(w_NV > 0, iota_V, 0), -1, keepdims=True)
    return jnp.minimum(j_N1, last_kept_N1)[:, 0].astype(jnp.int32)
