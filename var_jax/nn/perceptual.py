"""LPIPS-style perceptual distance: frozen VGG16 features with linear heads, weights from user files.

Nothing is downloaded: the weights come from files the user names, read safely (no pickle code)
and converted strictly (every parameter provided, every shape checked). Accepted key names (torch
layouts, as in the files people have):
  * VGG16 convs: torchvision's `features.{N}.weight|bias` (e.g. vgg16-397923af.pth) or the lpips
    package's `net.slice{k}.{N}.weight|bias` (N is torchvision's layer index in both);
  * linear heads: the lpips package's / taming's `lin{i}.model.1.weight` (or `.model.0.` when saved
    without dropout), shape (1, C_i, 1, 1).
Files may be `.pth` (torch zip) or `.npz` holding the same keys; `classifier.*` and
`scaling_layer.*` entries are ignored.
"""
from __future__ import annotations

import os
import re
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from var_jax.weights.strict import CONV, IDENTITY, params_from_state_dict
from var_jax.weights.torch_zip import load_torch_state_dict

# (torchvision conv indices, width) of VGG16's five stages; LPIPS taps the ReLU after each stage.
VGG16_STAGES = (((0, 2), 64), ((5, 7), 128), ((10, 12, 14), 256), ((17, 19, 21), 512),
                ((24, 26, 28), 512))
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)  # LPIPS input scaling (from [-1, 1])
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
_EPS = 1e-10
_HI = jax.lax.Precision.HIGHEST


class VGG16Features(nn.Module):
    """Images (B, H, W, 3) (already LPIPS-scaled) -> the 5 stage outputs relu1_2 .. relu5_3."""

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> list[jax.Array]:
        feats = []
        for s, (indices, width) in enumerate(VGG16_STAGES):
            if s:
                x_BHWC = nn.max_pool(x_BHWC, (2, 2), strides=(2, 2))
            for idx in indices:
                x_BHWC = nn.relu(nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)),
                                         precision=_HI, name=f"features_{idx}")(x_BHWC))
            feats.append(x_BHWC)
        return feats


def _unit_channels(f_BHWC: jax.Array) -> jax.Array:
    return f_BHWC / (jnp.sqrt(jnp.sum(jnp.square(f_BHWC), axis=-1, keepdims=True)) + _EPS)


class LPIPS(nn.Module):
    """Perceptual distance between image batches a, b (B, H, W, 3) in [-1, 1] -> (B,).

    Per stage: unit-normalise the features over channels, square the difference, weight the
    channels by the stage's 1x1 head (no bias), average over space; sum the stages.
    """

    @nn.compact
    def __call__(self, a_BHWC: jax.Array, b_BHWC: jax.Array) -> jax.Array:
        if a_BHWC.shape != b_BHWC.shape or a_BHWC.ndim != 4 or a_BHWC.shape[-1] != 3:
            raise ValueError(f"LPIPS compares two (B, H, W, 3) batches of the same shape, got "
                             f"{tuple(a_BHWC.shape)} and {tuple(b_BHWC.shape)}.")
        B = a_BHWC.shape[0]
        x = (jnp.concatenate([a_BHWC, b_BHWC]).astype(jnp.float32) - _SHIFT) / _SCALE
        total_B = jnp.zeros((B,), jnp.float32)
        for i, f in enumerate(VGG16Features(name="vgg")(x)):
            d_BHWC = jnp.square(_unit_channels(f[:B]) - _unit_channels(f[B:]))
            w_BHW1 = nn.Conv(1, (1, 1), use_bias=False, precision=_HI, name=f"lin_{i}")(d_BHWC)
            total_B = total_B + jnp.mean(w_BHW1, axis=(1, 2, 3))
        return total_B


def lpips_abstract_params():
    """Shapes of the LPIPS params (a tree of jax.ShapeDtypeStruct)."""
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return jax.eval_shape(LPIPS().init, jax.random.key(0), x, x)["params"]


def _lpips_key_map(key: str):
    m = re.fullmatch(r"(?:features|net\.slice\d)\.(\d+)\.(weight|bias)", key)
    if m:
        leaf, transform = ("kernel", CONV) if m.group(2) == "weight" else ("bias", IDENTITY)
        return ("vgg", f"features_{m.group(1)}", leaf), transform
    m = re.fullmatch(r"lin(\d)\.model\.[01]\.weight", key)
    if m:
        return (f"lin_{m.group(1)}", "kernel"), CONV
    return None


def _read_state_dict(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    return load_torch_state_dict(path)


def load_lpips_params(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> dict:
    """Read and merge the weight files `paths` (VGG16 + heads, in one file or several) into
    `LPIPS` params; raises ValueError for a key given twice, a missing or mis-shaped weight."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ValueError("load_lpips_params needs at least one weights file (.pth or .npz).")
    merged: dict[str, np.ndarray] = {}
    for p in map(os.fspath, paths):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"perceptual-loss weights file {p} does not exist.")
        for k, v in _read_state_dict(p).items():
            if k in merged:
                raise ValueError(f"key {k!r} appears in more than one perceptual weights file "
                                 f"({paths}); give each weight once.")
            merged[k] = v
    return params_from_state_dict(
        merged, lpips_abstract_params(), _lpips_key_map,
        ignore=(r"classifier\..*", r"scaling_layer\..*"), model_name="LPIPS (VGG16 + lin heads)")
