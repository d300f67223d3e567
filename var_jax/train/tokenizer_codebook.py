"""Codebook health: per-scale usage and perplexity, dead-code tracking and re-initialisation."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from var_jax.configs import VQVAEConfig
from var_jax.quant.resize import area_resize


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


def update_last_hit(last_hit_V: jax.Array, hist_KV: jax.Array, step: jax.Array) -> jax.Array:
    """Set the last-hit step of every code used by any scale in this batch to `step`."""
    return jnp.where(jnp.sum(hist_KV, axis=0) > 0, step.astype(last_hit_V.dtype), last_hit_V)


def dead_codes(last_hit_V: jax.Array, step: jax.Array, window: int) -> jax.Array:
    """(V,) bool: codes not hit in the last `window` steps (step - last_hit >= window)."""
    return (step - last_hit_V) >= window


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


def reinit_dead_codes(codebook_VC: jax.Array, dead_V: jax.Array,
                      queries: Sequence[jax.Array], key: jax.Array) -> jax.Array:
    """Replace the rows of dead codes by current latent vectors; live rows stay bit-identical.

    Each dead code draws a scale uniformly, then one of that scale's query vectors uniformly, so
    the coarse scales (few vectors per batch, the ones that collapse) get as many fresh codes as
    the fine ones.
    """
    if len(queries) == 0:
        raise ValueError("reinit_dead_codes needs the query vectors of at least one scale.")
    V, C = codebook_VC.shape
    sizes = [q.shape[0] for q in queries]
    pool_NC = jnp.concatenate([q.astype(codebook_VC.dtype) for q in queries])
    offsets = jnp.cumsum(jnp.array([0] + sizes[:-1], jnp.int32))
    k_scale, k_row = jax.random.split(key)
    scale_V = jax.random.randint(k_scale, (V,), 0, len(queries))
    size_V = jnp.array(sizes, jnp.int32)[scale_V]
    row_V = jnp.minimum((jax.random.uniform(k_row, (V,)) * size_V).astype(jnp.int32), size_V - 1)
    fresh_VC = pool_NC[offsets[scale_V] + row_V]
    return jnp.where(dead_V[:, None], jax.lax.stop_gradient(fresh_VC), codebook_VC)
