"""AdaLN blocks of the VAR transformer: attention+FFN block (own or shared AdaLN), head norm."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from var_jax.nn.attention import KVCache, SelfAttention
from var_jax.nn.dense_dot import dense_dot_general

_lp = nn.with_logical_partitioning
_zeros = nn.initializers.zeros_init()
_default_init = nn.initializers.lecun_normal()


def layer_norm(x, eps: float):
    """LayerNorm over the last axis without affine parameters; statistics in float32."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return (x32 - mean) * jax.lax.rsqrt(var + eps)


def drop_path(module: nn.Module, x_BLC, rate):
    """Stochastic depth: zero a sample's branch with prob `rate`, scale kept ones by 1/(1-rate).

    Active only when the module was given a 'dropout' rng; `rate` may be traced (a scanned
    per-block rate), a Python 0 skips it.
    """
    if (isinstance(rate, (int, float)) and rate <= 0.0) or not module.has_rng("dropout"):
        return x_BLC
    keep = 1.0 - rate
    keep_B11 = jax.random.bernoulli(module.make_rng("dropout"), keep, (x_BLC.shape[0], 1, 1))
    return x_BLC * (keep_B11.astype(x_BLC.dtype) / keep)


class FFN(nn.Module):
    """fc1 -> GELU(tanh) -> fc2 (`blocks.i.ffn`)."""

    embed_dim: int
    mlp_dim: int
    dtype: Any = jnp.float32
    kernel_init: Callable = _default_init   # fc1
    out_init: Callable = _default_init      # fc2

    @nn.compact
    def __call__(self, x_BLC):
        h = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1",
                     dot_general=dense_dot_general(self.dtype),
                     kernel_init=_lp(self.kernel_init, ("embed", "mlp")),
                     bias_init=_lp(_zeros, ("mlp",)))(x_BLC)
        h = nn.with_logical_constraint(h, ("batch", "seq", "mlp"))
        h = nn.gelu(h, approximate=True)
        return nn.Dense(self.embed_dim, dtype=self.dtype, name="fc2",
                        dot_general=dense_dot_general(self.dtype),
                        kernel_init=_lp(self.out_init, ("mlp", "embed")),
                        bias_init=_lp(_zeros, ("embed",)))(h)


class AdaLNSelfAttn(nn.Module):
    """x += attn(LN(x)*(1+scale1)+shift1)*gamma1;  x += ffn(LN(x)*(1+scale2)+shift2)*gamma2.

    The six modulation vectors (gamma1, gamma2, scale1, scale2, shift1, shift2) are
    `modulation(cond)`: `ada_lin(cond_BD)` (SiLU, Linear C->6C), or, with `shared_aln`, `cond`
    is already the shared projection (B, 1, 6, C) and this block adds its own learned `ada_gss`
    (1, 1, 6, C). They depend only on the class, so sampling computes them once for all scales.
    `drop_rate` is this block's drop-path rate (a call argument, so a scan over the blocks
    can feed each its own).
    """

    embed_dim: int
    num_heads: int
    mlp_dim: int
    norm_eps: float = 1e-6
    shared_aln: bool = False
    attn_l2_norm: bool = True
    dtype: Any = jnp.float32
    kernel_init: Callable = _default_init   # mat_qkv, fc1
    out_init: Callable = _default_init      # attn.proj, ffn.fc2
    ada_init: Callable = _default_init      # ada_lin kernel (C, 6C) or ada_gss (1, 1, 6, C)
    attention: str = "auto"                 # attention implementation (nn/block_attention.py)

    def setup(self):
        C = self.embed_dim
        if self.shared_aln:
            self.ada_gss = self.param("ada_gss", _lp(self.ada_init, (None, None, None, "embed")),
                                      (1, 1, 6, C))
        else:
            self.ada_lin = nn.Dense(6 * C, kernel_init=_lp(self.ada_init, ("embed", "ada")),
                                    bias_init=_lp(_zeros, ("ada",)))
        self.attn = SelfAttention(C, self.num_heads, self.attn_l2_norm, dtype=self.dtype,
                                  kernel_init=self.kernel_init, proj_init=self.out_init,
                                  attention=self.attention)
        self.ffn = FFN(C, self.mlp_dim, dtype=self.dtype, kernel_init=self.kernel_init,
                       out_init=self.out_init)

    def modulation(self, cond):
        """(B, 1, 6, C): gamma1, gamma2, scale1, scale2, shift1, shift2 of this block."""
        if self.shared_aln:
            return self.ada_gss + cond
        return self.ada_lin(nn.silu(cond)).reshape(-1, 1, 6, self.embed_dim)

    def __call__(self, x_BLC, mod_B16C, *, drop_rate=0.0, mask_11LL=None,
                 kv_cache: KVCache | None = None, cache_begin: int = 0):
        gamma1, gamma2, scale1, scale2, shift1, shift2 = (
            mod_B16C[:, :, i].astype(jnp.float32) for i in range(6))

        h = layer_norm(x_BLC, self.norm_eps) * (1 + scale1) + shift1
        h, kv_cache = self.attn(h.astype(self.dtype), mask_11LL=mask_11LL, kv_cache=kv_cache,
                                cache_begin=cache_begin)
        x_BLC = x_BLC + drop_path(self, h * gamma1, drop_rate)

        h = layer_norm(x_BLC, self.norm_eps) * (1 + scale2) + shift2
        h = self.ffn(h.astype(self.dtype))
        x_BLC = x_BLC + drop_path(self, h * gamma2, drop_rate)
        x_BLC = nn.with_logical_constraint(x_BLC, ("batch", "seq", "embed"))
        return x_BLC, kv_cache


class AdaLNBeforeHead(nn.Module):
    """LN(x)*(1+scale)+shift with (scale, shift) = ada_lin(cond) (`head_nm`); float32."""

    embed_dim: int
    norm_eps: float = 1e-6
    ada_init: Callable = _default_init

    @nn.compact
    def __call__(self, x_BLC, cond_BD):
        C = self.embed_dim
        mod = nn.Dense(2 * C, name="ada_lin", kernel_init=_lp(self.ada_init, ("embed", "ada")),
                       bias_init=_lp(_zeros, ("ada",)))(nn.silu(cond_BD.astype(jnp.float32)))
        scale_B1C, shift_B1C = jnp.split(mod.reshape(-1, 1, 2, C), 2, axis=2)
        return layer_norm(x_BLC, self.norm_eps) * (1 + scale_B1C[:, :, 0]) + shift_B1C[:, :, 0]
