"""VAR self-attention: L2-normalised q/k, q/v biases, block-causal mask or a static KV cache."""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from var_jax.nn.block_attention import block_causal_attention
from var_jax.nn.dense_dot import dense_dot_general

MAX_LOG_SCALE = math.log(100.0)   # the per-head q scale is exp(min(scale_mul, log 100))
L2_EPS = 1e-12                    # x / max(||x||, eps), as torch's F.normalize


class KVCache(NamedTuple):
    """Preallocated keys and values, filled scale by scale.

    One block's, (B, L, H, hd) each; or the whole block stack's, (depth, B, L, H, hd) each,
    with `layer` (an int or a traced index) the block whose slice `write` and `read` touch.
    """

    k: jax.Array
    v: jax.Array
    layer: Any = None

    def write(self, begin: int, k_BlHc, v_BlHc) -> "KVCache":
        """The cache with tokens [begin, begin + l) set to these keys and values (in place)."""
        if self.layer is None:
            at, k, v = (0, begin, 0, 0), k_BlHc, v_BlHc
        else:
            at, k, v = (self.layer, 0, begin, 0, 0), k_BlHc[None], v_BlHc[None]
        dus = jax.lax.dynamic_update_slice
        return self._replace(k=dus(self.k, k.astype(self.k.dtype), at),
                             v=dus(self.v, v.astype(self.v.dtype), at))

    def read(self, end: int):
        """(keys, values) of tokens [0, end), (B, end, H, hd) each."""
        if self.layer is None:
            return self.k[:, :end], self.v[:, :end]
        at, size = (self.layer, 0, 0, 0, 0), (1, self.k.shape[1], end) + self.k.shape[3:]
        return (jax.lax.dynamic_slice(self.k, at, size)[0],
                jax.lax.dynamic_slice(self.v, at, size)[0])

    @property
    def length(self) -> int:
        return self.k.shape[-3]


def l2_normalize(x, axis: int = -1):
    """x / max(||x||, 1e-12) along `axis`, computed in float32."""
    x = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True))
    return x / jnp.maximum(norm, L2_EPS)


def block_causal_mask(patch_nums) -> np.ndarray:
    """(1, 1, L, L) bool: token i may attend to token j iff scale(j) <= scale(i)."""
    scale_L = np.concatenate([np.full(pn * pn, i) for i, pn in enumerate(patch_nums)])
    return (scale_L[None, :] <= scale_L[:, None])[None, None]


class SelfAttention(nn.Module):
    """Multi-head self-attention of a VAR block (`blocks.i.attn` in the released weights).

    Teacher forcing: pass `mask_11LL` (the block-causal mask) and no cache.
    Sampling: pass `kv_cache` and the static token range [begin, begin + l) of the current
    scale; its keys/values are written there and the queries attend to cache[:, :begin + l]
    (with a mask too: a teacher-forcing prefill of the cache from begin 0).
    `attention`: the implementation (var_jax/nn/block_attention.py), "auto" for the backend's.
    """

    embed_dim: int
    num_heads: int
    attn_l2_norm: bool = True
    dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()   # mat_qkv
    proj_init: Callable = nn.initializers.lecun_normal()     # proj
    attention: str = "auto"

    @nn.compact
    def __call__(self, x_BLC, *, mask_11LL=None, kv_cache: KVCache | None = None,
                 cache_begin: int = 0):
        B, L, C = x_BLC.shape
        H = self.num_heads
        hd = C // H
        lp = nn.with_logical_partitioning
        q_bias = self.param("q_bias", lp(nn.initializers.zeros_init(), ("qkv",)), (C,))
        v_bias = self.param("v_bias", lp(nn.initializers.zeros_init(), ("qkv",)), (C,))
        bias_3C = jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias])
        qkv = nn.Dense(3 * C, use_bias=False, dtype=self.dtype, name="mat_qkv",
                       dot_general=dense_dot_general(self.dtype),
                       kernel_init=lp(self.kernel_init, ("embed", "qkv")))(x_BLC)
        qkv = qkv + bias_3C.astype(self.dtype)
        qkv = nn.with_logical_constraint(qkv, ("batch", "seq", "qkv"))
        q, k, v = jnp.split(qkv.reshape(B, L, 3, H, hd), 3, axis=2)
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0].astype(self.dtype)   # (B, L, H, hd)

        if self.attn_l2_norm:
            scale_mul_1H11 = self.param(
                "scale_mul_1H11", lp(nn.initializers.constant(math.log(4.0)),
                                     (None, "heads", None, None)), (1, H, 1, 1))
            mul_H1 = jnp.exp(jnp.minimum(scale_mul_1H11[0], MAX_LOG_SCALE))   # (H, 1, 1)
            q = (l2_normalize(q) * mul_H1[:, 0]).astype(self.dtype)
            k = l2_normalize(k).astype(self.dtype)
            scale = 1.0
        else:
            scale = 0.25 / math.sqrt(hd)

        if kv_cache is not None:
            end = cache_begin + L
            if end > kv_cache.length:
                raise ValueError(f"KV cache of length {kv_cache.length} cannot hold "
                                 f"tokens [{cache_begin}, {end}).")
            kv_cache = kv_cache.write(cache_begin, k, v)
            k, v = (a.astype(self.dtype) for a in kv_cache.read(end))
            # Without a mask all cached tokens belong to this or coarser scales; a mask is
            # only for a prefill from cache_begin 0 (queries and keys the same tokens).
            if mask_11LL is not None and (cache_begin, mask_11LL.shape[-1]) != (0, L):
                raise ValueError(f"a mask with a KV cache needs cache_begin 0 and a (L, L) mask "
                                 f"over the {L} tokens; got cache_begin {cache_begin}, mask "
                                 f"{mask_11LL.shape}.")

        out_BLHc = block_causal_attention(q, k, v, scale=scale, mask_11LL=mask_11LL,
                                          implementation=self.attention)
        out_BLC = out_BLHc.reshape(B, L, C)
        out_BLC = nn.Dense(C, dtype=self.dtype, name="proj",
                           dot_general=dense_dot_general(self.dtype),
                           kernel_init=lp(self.proj_init, ("qkv", "embed")),
                           bias_init=lp(nn.initializers.zeros_init(), ("embed",)))(out_BLC)
        return out_BLC, kv_cache
