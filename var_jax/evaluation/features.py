"""uint8 images of any size -> Inception activations, resized as pytorch-fid or the TF graph does.

Two protocols:
- "pytorch" (pytorch-fid): x/255, bilinear resize to 299 with half-pixel centres
  (`F.interpolate(..., align_corners=False)`), then 2x - 1; logits = fc(pool) with fc's bias.
- "tf" (the OpenAI evaluator's TF1 graph, which reports the paper's numbers): bilinear
  resize of 0..255 values WITHOUT half-pixel centres (TF1 `resize_bilinear`, src = i * in/out,
  which shifts the image by up to half a source pixel), then (x - 128) / 128; logits = pool @ W,
  without fc's bias, as the evaluator takes them for the Inception Score.
The two give slightly different features, so FIDs differ by a small amount (pytorch-fid
documents the same gap vs the TF code); compare numbers only within one protocol, and use "tf"
against statistics made by the OpenAI evaluator (e.g. VIRTUAL_imagenet256_labeled.npz).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from var_jax.data.augment import bilinear_matrix
from var_jax.evaluation.inception import FIDInceptionV3

INPUT_SIZE = 299
PROTOCOLS = ("pytorch", "tf")
_AXIS = "batch"


class Activations(NamedTuple):
    """Per image: pool (B, 2048) for FID and P/R, logits (B, 1008) for IS, spatial (B, 2023)
    for sFID (the first 7 maps of Mixed_6d.branch1x1 = TF's mixed_6/conv, flattened HWC)."""

    pool: np.ndarray
    logits: np.ndarray
    spatial: np.ndarray


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} must be one of {PROTOCOLS} ('pytorch' as "
                         "pytorch-fid, 'tf' as the OpenAI TF evaluator).")
    return protocol


@functools.lru_cache(maxsize=16)
def resize_matrices(height: int, width: int, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows (299, H), cols (299, W)) for `protocol`."""
    half_pixel = check_protocol(protocol) == "pytorch"   # "tf": TF1's resize_bilinear
    return (bilinear_matrix(height, INPUT_SIZE, half_pixel),
            bilinear_matrix(width, INPUT_SIZE, half_pixel))


def _forward(params, images_BHWC, rows_SH, cols_SW, *, protocol: str):
    x = jnp.einsum("sh,bhwc,tw->bstc", rows_SH, images_BHWC.astype(jnp.float32), cols_SW,
                   precision=jax.lax.Precision.HIGHEST)
    if protocol == "pytorch":
        x = x / 255.0 * 2.0 - 1.0
    else:
        x = (x - 128.0) / 128.0
    pool, spatial, logits = FIDInceptionV3().apply({"params": params}, x)
    if protocol == "tf":
        logits = logits - params["fc"]["bias"]
    return pool, logits, spatial.reshape(spatial.shape[0], -1)


def local_mesh() -> jax.sharding.Mesh:
    devices = jax.local_devices()
    return jax.make_mesh((len(devices),), (_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


@functools.lru_cache(maxsize=4)
def _compiled(protocol: str):
    mesh = local_mesh()
    rep, bat = NamedSharding(mesh, P()), NamedSharding(mesh, P(_AXIS))
    fn = jax.jit(functools.partial(_forward, protocol=protocol),
                 in_shardings=(rep, bat, rep, rep), out_shardings=(bat, bat, bat))
    return fn, mesh


def check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"Inception takes uint8 RGB images (B, H, W, 3) with values 0..255; got "
                         f"dtype {images.dtype} shape {images.shape} (convert [0, 1] floats with "
                         "np.round(x * 255).astype(np.uint8)).")
    return images


def inception_activations(params, images_uint8_BHWC, protocol: str = "pytorch") -> Activations:
    """One batch (sharded over the local devices) -> float32 numpy `Activations`."""
    images = check_images(images_uint8_BHWC)
    fn, mesh = _compiled(check_protocol(protocol))
    B = images.shape[0]
    pad = (-B) % mesh.size
    if pad:
        images = np.concatenate([images, np.repeat(images[-1:], pad, 0)])
    rows, cols = resize_matrices(images.shape[1], images.shape[2], protocol)
    out = fn(params, images, rows, cols)
    return Activations(*(np.asarray(a)[:B] for a in out))


def inception_features(params, images_uint8_BHWC, protocol: str = "pytorch"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(pool (B, 2048), logits (B, 1008)) of uint8 images of any size; see the module doc."""
    act = inception_activations(params, images_uint8_BHWC, protocol)
    return act.pool, act.logits


def activations_of(params, images_uint8_NHWC, protocol: str = "pytorch",
                   batch_size: int = 100) -> Activations:
    """A whole array of images, `batch_size` at a time (one compiled shape: the last is padded)."""
    images = check_images(images_uint8_NHWC)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1.")
    parts = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        n = len(chunk)
        if n < batch_size and len(images) > batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, 0)])
        parts.append([a[:n] for a in inception_activations(params, chunk, protocol)])
    return Activations(*(np.concatenate(p) for p in zip(*parts)))
