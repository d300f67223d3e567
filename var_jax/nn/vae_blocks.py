"""VQGAN building blocks (NHWC): ResNet block, self-attention, 2x down/upsampling."""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from var_jax.nn.platform import target_platform

Dtype = Any


def group_norm(norm_groups: int, norm_eps: float, dtype: Dtype, name: str) -> nn.GroupNorm:
    """GroupNorm with torch's statistics (two-pass variance, float32 reductions)."""
    return nn.GroupNorm(num_groups=norm_groups, epsilon=norm_eps, dtype=dtype,
                        use_fast_variance=False, name=name)


def conv(features: int, kernel: int, dtype: Dtype, name: Optional[str] = None, stride: int = 1,
         padding: Any = None) -> nn.Module:
    """torch-style Conv2d: zero padding k//2 unless `padding` is given; float32 params."""
    if (kernel, stride, padding) == (3, 1, None):
        return Conv3x3(features, dtype, name=name)
    if padding is None:
        padding = ((kernel // 2, kernel // 2),) * 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                   dtype=dtype, name=name)


# CPU: a 3x3 conv's input is cut into strips of rows of at most this many bytes. XLA:CPU's conv
# slows down on large inputs: batch 2 at 256x256x160 it ran at 131 GFLOP/s whole and 184 in
# 32-row strips; 128x128x320 211 -> 221-228, 64x64x640 216 -> 223-240; 32x32x640 (5 MiB) in two
# strips was slower, 232 -> 221 (2-core CI machine, float32; README, "Sampling speed outside
# the transformer blocks").
CPU_STRIP_BYTES = 8 * 2**20


def conv3x3(x_BHWC: jax.Array, kernel_33CD: jax.Array, bias_D: jax.Array,
            strip_bytes: int | None = None) -> jax.Array:
    """conv3x3 with zero padding 1, plus bias; with `strip_bytes`, computed in strips of rows
    (each reading its one-row halo) whose input is at most that large. Same result either way."""
    H = x_BHWC.shape[1]
    strips = 1 if strip_bytes is None else min(H, -(-x_BHWC.nbytes // strip_bytes))
    rows = -(-H // strips)
    x_pad = jnp.pad(x_BHWC, ((0, 0), (1, 1), (0, 0), (0, 0)))   # XLA folds it into the conv
    y = jnp.concatenate([
        jax.lax.conv_general_dilated(x_pad[:, r:min(r + rows, H) + 2], kernel_33CD, (1, 1),
                                     ((0, 0), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        for r in range(0, H, rows)], axis=1)
    return y + bias_D.astype(y.dtype)


class Conv3x3(nn.Module):
    """torch's Conv2d(k=3, padding=1) with nn.Conv's params (`kernel`, `bias`) and dtype
    handling; in row strips on CPU (`CPU_STRIP_BYTES`)."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        kernel, bias = conv_params(self, self.features, 3, x_BHWC.shape[-1])
        strip_bytes = CPU_STRIP_BYTES if target_platform() == "cpu" else None
        return conv3x3(x_BHWC.astype(self.dtype), kernel.astype(self.dtype), bias, strip_bytes)


class ResnetBlock(nn.Module):
    """norm1-silu-conv1-norm2-silu-conv2 plus the input (1x1 `nin_shortcut` if widths differ)."""

    out_channels: int
    norm_groups: int = 32
    norm_eps: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        g, e, dt, out = self.norm_groups, self.norm_eps, self.dtype, self.out_channels
        h = conv(out, 3, dt, "conv1")(nn.silu(group_norm(g, e, dt, "norm1")(x_BHWC)))
        h = conv(out, 3, dt, "conv2")(nn.silu(group_norm(g, e, dt, "norm2")(h)))
        if x_BHWC.shape[-1] != out:
            x_BHWC = conv(out, 1, dt, "nin_shortcut")(x_BHWC)
        return x_BHWC + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions: x + proj_out(softmax(q.k/sqrt(C)) v).

    q, k, v come from one 1x1 conv `qkv` (C -> 3C), split in that channel order.
    """

    norm_groups: int = 32
    norm_eps: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        B, H, W, C = x_BHWC.shape
        h = group_norm(self.norm_groups, self.norm_eps, self.dtype, "norm")(x_BHWC)
        qkv_BL3C = conv(3 * C, 1, self.dtype, "qkv")(h).reshape(B, H * W, 3 * C)
        q_BLC, k_BLC, v_BLC = jnp.split(qkv_BL3C, 3, axis=-1)
        w_BLL = jnp.einsum("bqc,bkc->bqk", q_BLC, k_BLC) * (C ** -0.5)
        w_BLL = jax.nn.softmax(w_BLL.astype(jnp.float32), axis=-1).astype(v_BLC.dtype)
        o_BHWC = jnp.einsum("bqk,bkc->bqc", w_BLL, v_BLC).reshape(B, H, W, C)
        return x_BHWC + conv(C, 1, self.dtype, "proj_out")(o_BHWC)


class Downsample(nn.Module):
    """Pad right and bottom by one zero, then a 3x3 stride-2 conv: (H, W) -> (H/2, W/2)."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        return conv(x_BHWC.shape[-1], 3, self.dtype, "conv", stride=2,
                    padding=((0, 1), (0, 1)))(x_BHWC)


# Row (and column) taps of a 3x3 conv on a nearest-x2 image, as 2 taps on the original: output
# row 2i+a reads original rows (i-1+a, i+a) with these sums of the 3 kernel rows.
_PHASE_TAPS = np.array([[[1, 0, 0], [0, 1, 1]],     # a = 0: K0 | K1 + K2
                        [[1, 1, 0], [0, 0, 1]]],    # a = 1: K0 + K1 | K2
                       np.float32)


def conv_params(module: nn.Module, features: int, kernel_size: int,
                in_features: int) -> tuple[jax.Array, jax.Array]:
    """`module`'s params as an `nn.Conv` has them (names, shapes, init): (kernel, bias)."""
    k = kernel_size
    kernel = module.param("kernel", nn.initializers.lecun_normal(), (k, k, in_features, features))
    return kernel, module.param("bias", nn.initializers.zeros, (features,))


class ConvParams(nn.Module):
    """The parameters of an `nn.Conv` (same names, shapes and init) without its computation."""

    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
        return conv_params(self, self.features, self.kernel_size, in_features)


def upsample_conv(x_BhwC: jax.Array, kernel_33CD: jax.Array, bias_D: jax.Array) -> jax.Array:
    """conv3x3(nearest_x2(x)) (zero padding 1) without building the x2 image ("sub-pixel").

    Each of the 4 output phases (a, b) is a 2x2 conv of x with summed kernel taps: one 2x2
    conv to 4*D channels then an interleave, 16/36 of the multiply-adds of the direct form.
    """
    B, h, w, _ = x_BhwC.shape
    D = kernel_33CD.shape[-1]
    taps = jnp.asarray(_PHASE_TAPS, kernel_33CD.dtype)
    k_22CabD = jnp.einsum("ayk,bxl,klcd->yxcabd", taps, taps, kernel_33CD,
                          precision=jax.lax.Precision.HIGHEST)   # exact sums of taps
    k_22C4D = k_22CabD.reshape(2, 2, -1, 4 * D).astype(x_BhwC.dtype)
    z = jax.lax.conv_general_dilated(x_BhwC, k_22C4D, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    z = z.reshape(B, h + 1, w + 1, 2, 2, D)
    rows = [jnp.stack([z[:, a:a + h, b:b + w, a, b] for b in (0, 1)], 3) for a in (0, 1)]
    y = jnp.stack(rows, 2).reshape(B, 2 * h, 2 * w, D)
    return y + bias_D.astype(y.dtype)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv (computed as `upsample_conv`)."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        C = x_BHWC.shape[-1]
        kernel, bias = ConvParams(C, 3, name="conv")(C)
        return upsample_conv(x_BHWC.astype(self.dtype), kernel, bias)
