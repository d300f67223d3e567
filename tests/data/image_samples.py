"""Small encoded images for the data tests."""
import io

import numpy as np
from PIL import Image


def encode_image(pixels_HW3: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels_HW3).save(buf, format=fmt)
    return buf.getvalue()


def coloured_image(rng: np.random.Generator, height: int, width: int, channel: int) -> np.ndarray:
    """Noise with one dominant channel, so the class of an image can be read off its colours."""
    pixels = rng.integers(0, 80, (height, width, 3)).astype(np.uint8)
    pixels[..., channel] += 150
    return pixels
