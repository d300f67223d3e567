"""Image preprocessing of the paper: Lanczos resize to 1.125x, random/centre crop, scale to [-1, 1]."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

# The shorter side is resized to round(MID_RATIO * image_size) before cropping (VAR's recipe).
MID_RATIO = 1.125


class UnreadableImageError(Exception):
    """An encoded image that PIL cannot decode (truncated, not an image, too large...)."""


def decode_rgb(data: bytes) -> Image.Image:
    """Image bytes -> a fully loaded RGB PIL image (see `to_rgb`); raises UnreadableImageError."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # Forces the whole decode, so a truncated file fails here.
        return to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImageError(f"{type(e).__name__}: {e}") from e


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB of a decoded image, whatever its mode.

    16-bit grey ("I;16*", and "I" as PIL opens 16-bit PNGs) is scaled 0..65535 -> 0..255 (not
    clipped, which would turn it white); transparent images (alpha, or a palette with a
    transparent entry) are composited over white; palette, bilevel, grey, CMYK and YCbCr go
    through PIL's conversion. Float ("F") and other modes raise UnreadableImageError.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise UnreadableImageError(f"mode {mode} pixels span [{a.min()}, {a.max()}], beyond "
                                       "16 bits; save the image as 8- or 16-bit.")
        grey = ((a * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in ("1", "L", "P", "CMYK", "YCbCr"):
        return img.convert("RGB")
    raise UnreadableImageError(f"images of PIL mode {mode!r} are not supported; save it as 8-bit "
                               "RGB, grey or palette (PNG or JPEG).")


def mid_size(image_size: int) -> int:
    """The shorter side after the first resize: 288 for 256, 576 for 512."""
    return round(MID_RATIO * image_size)


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """Lanczos resize so the shorter side is `size`, the longer side truncated like torchvision."""
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.Resampling.LANCZOS)


def crop_offsets(height: int, width: int, image_size: int,
                 rng: np.random.Generator | None) -> tuple[int, int]:
    """(top, left) of the crop: uniform with `rng` (training), the centre when rng is None."""
    if height < image_size or width < image_size:
        raise ValueError(f"cannot crop {image_size}x{image_size} from a {height}x{width} image.")
    if rng is None:
        return int(round((height - image_size) / 2.0)), int(round((width - image_size) / 2.0))
    return (int(rng.integers(0, height - image_size + 1)),   # top, then left
            int(rng.integers(0, width - image_size + 1)))


def to_pm1(pixels_HW3: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1] (0 -> -1, 255 -> 1)."""
    return pixels_HW3.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def preprocess(data: bytes, image_size: int, rng: np.random.Generator | None) -> np.ndarray:
    """Encoded image -> float32 (image_size, image_size, 3) in [-1, 1].

    Resize the shorter side to 1.125x `image_size` (Lanczos), then crop `image_size` square:
    at a random place drawn from `rng` for training, in the centre when `rng` is None (eval).
    No flip. Raises UnreadableImageError when the bytes do not decode.
    """
    img = resize_shorter_side(decode_rgb(data), mid_size(image_size))
    top, left = crop_offsets(img.height, img.width, image_size, rng)
    img = img.crop((left, top, left + image_size, top + image_size))
    return to_pm1(np.asarray(img))


def bilinear_matrix(in_size: int, out_size: int, half_pixel: bool = True) -> np.ndarray:
    """(out, in) float32 matrix of bilinear interpolation, edge clamped: half-pixel centres
    (torch's align_corners=False), or with `half_pixel=False` TF1's resize_bilinear
    (align_corners=False, half_pixel_centers=False: output i reads source i * in / out)."""
    shift = 0.5 if half_pixel else 0.0
    src = (np.arange(out_size) + shift) * (in_size / out_size) - shift
    src = np.clip(src, 0.0, in_size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    mat = np.zeros((out_size, in_size), np.float64)
    mat[np.arange(out_size), lo] += 1.0 - frac
    mat[np.arange(out_size), hi] += frac
    return mat.astype(np.float32)


def upscale_digits(raw_Bhw: np.ndarray, image_size: int) -> np.ndarray:
    """8x8 digits with values 0..16 -> grey float32 (B, image_size, image_size) in [-1, 1].

    0..16 maps linearly to [-1, 1], then bilinear upscaling (a convex mix of pixels, so the
    range stays [-1, 1]).
    """
    h, w = raw_Bhw.shape[1:]
    if image_size < max(h, w):
        raise ValueError(f"image_size={image_size} is smaller than the {h}x{w} digits; "
                         f"use image_size >= {max(h, w)} (e.g. 16, 32 or 64).")
    x_Bhw = raw_Bhw.astype(np.float32) / np.float32(8.0) - np.float32(1.0)
    rows_Sh = bilinear_matrix(h, image_size)
    cols_Sw = bilinear_matrix(w, image_size)
    y_BSS = np.einsum("sh,bhw,tw->bst", rows_Sh, x_Bhw, cols_Sw)
    return np.clip(y_BSS, -1.0, 1.0).astype(np.float32)  # the clip only trims float rounding
