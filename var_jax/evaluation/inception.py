"""The FID InceptionV3 (pytorch-fid's port of the 2015 TF graph) as Flax linen modules, NHWC.

BatchNorm is folded into each convolution (inference mode, eps 1e-3), so a `BasicConv` holds a
kernel and a bias. Blocks follow pytorch-fid: `FIDInceptionA/C/E_1/E_2` average pools do not
count padding, the last block (`Mixed_7c`) max-pools, and `fc` has 1008 classes.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NUM_CLASSES = 1008
POOL_DIM = 2048
SPATIAL_CHANNELS = 7     # the OpenAI evaluator's sFID: mixed_6/conv (Mixed_6d.branch1x1), 7 maps
PRECISION = jax.lax.Precision.HIGHEST   # features feed float64 statistics: no TF32/bf16 passes


class BasicConv(nn.Module):
    """conv (BatchNorm folded in) + ReLU; `padding` is ((top, bottom), (left, right))."""

    features: int
    kernel: Sequence[int]
    strides: int = 1
    padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0))

    @nn.compact
    def __call__(self, x):
        conv = nn.Conv(self.features, tuple(self.kernel), strides=self.strides,
                       padding=tuple(self.padding), precision=PRECISION, name="conv")
        return nn.relu(conv(x))


def _same(kh: int, kw: int):
    return ((kh // 2, kh // 2), (kw // 2, kw // 2))


def _avg_pool_3x3(x):
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=False)


def _max_pool_3x3_s2(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv(64, (5, 5), padding=_same(5, 5), name="branch5x5_2")(b5)
        b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), padding=_same(3, 3), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), padding=_same(3, 3), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
        bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), padding=_same(3, 3), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c = self.channels_7x7
        b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv(c, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv(c, (1, 7), padding=_same(1, 7), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=_same(7, 1), name="branch7x7_3")(b7)
        bd = BasicConv(c, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv(c, (7, 1), padding=_same(7, 1), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c, (1, 7), padding=_same(1, 7), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c, (7, 1), padding=_same(7, 1), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), padding=_same(1, 7), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=_same(1, 7), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=_same(7, 1), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """E_1 (`max_pool=False`, Mixed_7b) average-pools without padding; E_2 (Mixed_7c) max-pools."""

    max_pool: bool

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([
            BasicConv(384, (1, 3), padding=_same(1, 3), name="branch3x3_2a")(b3),
            BasicConv(384, (3, 1), padding=_same(3, 1), name="branch3x3_2b")(b3)], axis=-1)
        bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), padding=_same(3, 3), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([
            BasicConv(384, (1, 3), padding=_same(1, 3), name="branch3x3dbl_3a")(bd),
            BasicConv(384, (3, 1), padding=_same(3, 1), name="branch3x3dbl_3b")(bd)], axis=-1)
        if self.max_pool:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_3x3(x)
        bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """x (B, 299, 299, 3) in [-1, 1] -> pool (B, 2048), spatial (B, 17, 17, 7), logits (B, 1008).

    `logits` is `fc(pool)` with fc's bias, as pytorch-fid's weights define it.
    """

    @nn.compact
    def __call__(self, x_BHWC):
        x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x_BHWC)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), padding=_same(3, 3), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        spatial = x[..., :SPATIAL_CHANNELS]      # Mixed_6d's first branch is branch1x1
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(max_pool=False, name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        pool = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(NUM_CLASSES, precision=PRECISION, name="fc")(pool)
        return pool, spatial, logits
