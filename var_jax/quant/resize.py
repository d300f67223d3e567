"""PyTorch-exact `F.interpolate` "area" and "bicubic" resizes as precomputed matrices (NHWC)."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

_CUBIC_A = -0.75  # PyTorch's Keys kernel parameter


def _check_sizes(in_size: int, out_size: int) -> None:
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be >= 1, got in={in_size}, out={out_size}.")


def _frozen(m: np.ndarray) -> np.ndarray:
    out = m.astype(np.float32)
    out.flags.writeable = False  # cached and shared: guard against in-place edits
    return out


@functools.lru_cache(maxsize=None)
def area_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) float32: adaptive average pooling, as torch's mode="area".

    Output cell i averages input cells floor(i*in/out) .. ceil((i+1)*in/out) - 1.
    """
    _check_sizes(in_size, out_size)
    m = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)  # ceil division in exact integers
        m[i, start:end] = 1.0 / (end - start)
    return _frozen(m)


def _cubic_weights(t: float) -> tuple[float, float, float, float]:
    """Keys cubic convolution weights of the taps at offsets -1, 0, 1, 2 for fraction t."""
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


@functools.lru_cache(maxsize=None)
def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) float32: torch's mode="bicubic", align_corners=False, no antialiasing.

    Source coordinate (i+0.5)*in/out - 0.5, Keys kernel a=-0.75, taps clamped to the border.
    """
    _check_sizes(in_size, out_size)
    m = np.zeros((out_size, in_size), np.float64)
    scale = in_size / out_size
    for i in range(out_size):
        src = (i + 0.5) * scale - 0.5
        base = math.floor(src)
        for offset, w in zip((-1, 0, 1, 2), _cubic_weights(src - base)):
            m[i, min(max(base + offset, 0), in_size - 1)] += w
    return _frozen(m)


def _resize(x_BhwC: jax.Array, out_hw: tuple[int, int], matrix_fn) -> jax.Array:
    if x_BhwC.ndim != 4:
        raise ValueError(f"resize expects an NHWC array, got shape {x_BhwC.shape}.")
    (h, w), (oh, ow) = x_BhwC.shape[1:3], out_hw
    if (h, w) == (oh, ow):
        return x_BhwC
    mh = jnp.asarray(matrix_fn(h, oh), x_BhwC.dtype)
    mw = jnp.asarray(matrix_fn(w, ow), x_BhwC.dtype)
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,bhwc->bowc", mh, x_BhwC, precision=hi)
    return jnp.einsum("pw,bowc->bopc", mw, y, precision=hi)


def area_resize(x_BhwC: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """torch `F.interpolate(x, size=out_hw, mode="area")` on an NHWC array."""
    return _resize(x_BhwC, tuple(out_hw), area_matrix)


def bicubic_resize(x_BhwC: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """torch `F.interpolate(x, size=out_hw, mode="bicubic", align_corners=False)` on NHWC."""
    return _resize(x_BhwC, tuple(out_hw), bicubic_matrix)
