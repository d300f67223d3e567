"""Images in and out: read a file, float pixels -> uint8 (one rounding rule), tile a grid PNG."""
from __future__ import annotations

import os

import numpy as np
from etils import epath
from PIL import Image, UnidentifiedImageError

from var_jax import atomic
from var_jax.data.augment import UnreadableImageError, to_rgb


def load_image(path: str, size: int) -> np.ndarray:
    """RGB float32 (size, size, 3) in [-1, 1]: shorter side resized to `size` (Lanczos), centre
    crop. Raises ValueError naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as im:
            im.load()
            im = to_rgb(im)
    except (UnidentifiedImageError, UnreadableImageError, OSError, SyntaxError,
            ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    w, h = im.size
    scale = size / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                   Image.Resampling.LANCZOS)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, np.float32) / 127.5 - 1.0


def to_uint8(x, low: float = 0.0) -> np.ndarray:
    """Float pixels in [low, 1] (low is 0 or -1) -> uint8: x * 255 + 0.5 truncated, clamped, as
    the reference's `mul(255).add_(0.5).clamp_(0, 255)` (uint8 input passes through)."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    unit = (x.astype(np.float32) - low) / (1.0 - low)
    return np.clip(np.floor(unit * 255.0 + 0.5), 0, 255).astype(np.uint8)


def grid(images_NHWC, cols: int, gap: int = 2, zoom: int = 1) -> np.ndarray:
    """uint8 (rows*(h+gap)-gap, cols*(w+gap)-gap, C): images (floats in [0, 1] or uint8) row by
    row, each enlarged `zoom` times, `gap` white pixels between neighbours."""
    imgs = to_uint8(images_NHWC)
    imgs = np.repeat(np.repeat(imgs, zoom, 1), zoom, 2)
    n, h, w, c = imgs.shape
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, c), 255, np.uint8)
    for i, img in enumerate(imgs):
        r, q = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, q * (w + gap):q * (w + gap) + w] = img
    return out


def save_grid(path: str | os.PathLike, images_NHWC, cols: int, gap: int = 2,
              zoom: int = 1) -> str:
    """`grid(...)` written atomically to `path` (parent folders made); returns the path."""
    epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
    path = str(path)
    pixels = grid(images_NHWC, cols, gap, zoom)
    atomic.write_image(path, pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    return path
