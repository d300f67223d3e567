"""Codebook health: per-scale usage and perplexity, dead and starving codes, their re-initialisation.

Bookkeeping is one (K, V) int32 array `last_hit_KV`: the last step at which scale k chose code v.
- A code is *dead* when no scale chose it for `window` steps.
- A scale is *starving* when fewer than `min_codes[k]` codes were chosen by it within the window
  (the coarse 1x1..3x3 scales collapse to a handful of codes otherwise: every image's coarse
  latent is pulled towards the one code it gets).
Re-initialisation takes the least recently used codes (dead ones first): as many as the starving
scales lack, each filled from a current latent vector of the scale that lacks it, plus any
remaining dead codes, each filled from a uniformly drawn scale's latents. Nothing else changes.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from var_jax.configs import VQVAEConfig
from var_jax.quant.resize import area_resize

KEEP = -1   # `plan` entry of a code that is not re-initialised


def usage_per_scale(hist_KV: jax.Array) -> jax.Array:
    """(K,) fraction of the V codes hit at least once by each scale."""
    return jnp.mean((hist_KV > 0).astype(jnp.float32), axis=1)


def perplexity_per_scale(hist_KV: jax.Array) -> jax.Array:
    """(K,) exp(entropy) of each scale's code histogram: the effective number of codes used."""
    counts = hist_KV.astype(jnp.float32)
    p_KV = counts / jnp.maximum(jnp.sum(counts, axis=1, keepdims=True), 1.0)
    entropy_K = -jnp.sum(jnp.where(p_KV > 0, p_KV * jnp.log(jnp.where(p_KV > 0, p_KV, 1.0)), 0.0),
                         axis=1)
    return jnp.exp(entropy_K)


def update_last_hit(last_hit_KV: jax.Array, hist_KV: jax.Array, step: jax.Array) -> jax.Array:
    """Record `step` for every (scale, code) pair used in this batch."""
    return jnp.where(hist_KV > 0, step.astype(last_hit_KV.dtype), last_hit_KV)


def dead_codes(last_hit_KV: jax.Array, step: jax.Array, window: int) -> jax.Array:
    """(V,) bool: codes no scale chose in the last `window` steps."""
    return (step - jnp.max(last_hit_KV, axis=0)) >= window


def live_codes_per_scale(last_hit_KV: jax.Array, step: jax.Array, window: int) -> jax.Array:
    """(K,) int32: how many codes each scale chose within the last `window` steps."""
    return jnp.sum((step - last_hit_KV) < window, axis=1).astype(jnp.int32)


def min_codes_per_scale(cfg: VQVAEConfig, batch_size: int, min_usage: float) -> tuple[int, ...]:
    """Scale k's floor: ceil(min_usage * min(V, lookups per step = batch * pn_k**2))."""
    return tuple(math.ceil(min_usage * min(cfg.vocab_size, batch_size * pn * pn))
                 for pn in cfg.patch_nums)


def plan_reinit(last_hit_KV: jax.Array, step: jax.Array, window: int,
                min_codes_K: Sequence[int], key: jax.Array) -> jax.Array:
    """(V,) int32: for each code, the scale whose latents re-initialise it, or KEEP.

    Codes are taken least recently used first: the starving scales' deficits (scale k lacks
    min_codes[k] - live codes of k), then the rest of the dead codes (each a uniform scale).
    """
    K, V = last_hit_KV.shape
    deficit_K = jnp.maximum(jnp.asarray(min_codes_K, jnp.int32)
                            - live_codes_per_scale(last_hit_KV, step, window), 0)
    ends_K = jnp.cumsum(deficit_K)
    n_starving = jnp.minimum(ends_K[-1], V // 2)   # never more than half the codebook at once
    n_dead = jnp.sum(dead_codes(last_hit_KV, step, window))
    rank_V = jnp.argsort(jnp.argsort(jnp.max(last_hit_KV, axis=0), stable=True), stable=True)
    starving_scale_V = jnp.searchsorted(ends_K, rank_V, side="right").astype(jnp.int32)
    any_scale_V = jax.random.randint(key, (V,), 0, K, jnp.int32)
    return jnp.where(rank_V < n_starving, starving_scale_V,
                     jnp.where(rank_V < jnp.maximum(n_dead, n_starving), any_scale_V, KEEP))


def scale_queries(f_BhwC: jax.Array, fhat_list: Sequence[jax.Array],
                  cfg: VQVAEConfig) -> list[jax.Array]:
    """The vectors each scale looks up in the codebook, (B*pn*pn, C) per scale.

    Scale k quantizes the residual r_k = f - f_hat_{k-1} (r_0 = f), area-downsampled to pn_k
    (the last scale as is); `fhat_list` is the running f_hat after each scale.
    """
    if len(fhat_list) < cfg.num_scales - 1:
        raise ValueError(f"scale_queries needs the running f_hat of at least the first "
                         f"{cfg.num_scales - 1} scales, got {len(fhat_list)}.")
    f_BhwC = jax.lax.stop_gradient(f_BhwC.astype(jnp.float32))
    C = f_BhwC.shape[-1]
    out = []
    for si, pn in enumerate(cfg.patch_nums):
        rest = f_BhwC if si == 0 else f_BhwC - jax.lax.stop_gradient(fhat_list[si - 1])
        z = rest if si == cfg.num_scales - 1 else area_resize(rest, (pn, pn))
        out.append(z.reshape(-1, C))
    return out


def reinit_codes(codebook_VC: jax.Array, plan_V: jax.Array, queries: Sequence[jax.Array],
                 key: jax.Array) -> jax.Array:
    """Rows with plan_V[v] = k become a random latent vector of scale k (from `queries[k]`);
    rows with KEEP stay bit-identical."""
    if len(queries) == 0:
        raise ValueError("reinit_codes needs the query vectors of at least one scale.")
    sizes = [q.shape[0] for q in queries]
    pool_NC = jnp.concatenate([q.astype(codebook_VC.dtype) for q in queries])
    offsets_K = jnp.cumsum(jnp.array([0] + sizes[:-1], jnp.int32))
    scale_V = jnp.clip(plan_V, 0, len(queries) - 1)
    size_V = jnp.array(sizes, jnp.int32)[scale_V]
    row_V = jnp.minimum((jax.random.uniform(key, plan_V.shape) * size_V).astype(jnp.int32),
                        size_V - 1)
    fresh_VC = jax.lax.stop_gradient(pool_NC[offsets_K[scale_V] + row_V])
    return jnp.where((plan_V != KEEP)[:, None], fresh_VC, codebook_VC)


def mark_reinit(last_hit_KV: jax.Array, plan_V: jax.Array, step: jax.Array) -> jax.Array:
    """A re-initialised code counts as just chosen by the scale it was filled for (a window's
    grace); its other scales' records are cleared to step - 10**9 (long unused)."""
    K = last_hit_KV.shape[0]
    target_KV = plan_V[None, :] == jnp.arange(K, dtype=plan_V.dtype)[:, None]
    cleared = jnp.where(plan_V[None, :] != KEEP, jnp.int32(-10**9) + step, last_hit_KV)
    return jnp.where(target_KV, step.astype(last_hit_KV.dtype), cleared)
