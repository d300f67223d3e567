"""Bad-input catalogue, part 3: images of every PIL mode, and data that does not fit the model.

Each row: the input, what it must decode to (mean pixel value) or the exception and a phrase.
"""
import io
import types

import numpy as np
import pytest
from PIL import Image

from train_helpers import tiny_var_config
from var_jax.image_io import load_image
from var_jax.data.augment import UnreadableImageError, decode_rgb
from var_jax.train.var_task import VARTask


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _grey16(value: int) -> Image.Image:
    return Image.fromarray(np.full((8, 8), value, np.uint16))


def _palette(transparent: bool) -> Image.Image:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    if transparent:
        img.info["transparency"] = 1
    return img


MODE_CASES = [
    # (id, image, format, expected RGB of pixel (0, 0))
    ("16-bit-grey-mid", _grey16(32768), "PNG", (128, 128, 128)),
    ("16-bit-grey-dark", _grey16(1000), "PNG", (4, 4, 4)),
    ("16-bit-grey-full", _grey16(65535), "PNG", (255, 255, 255)),
    ("rgba-transparent", Image.new("RGBA", (8, 8), (10, 20, 30, 0)), "PNG", (255, 255, 255)),
    ("rgba-half", Image.new("RGBA", (8, 8), (0, 0, 0, 128)), "PNG", (127, 127, 127)),
    ("la-opaque", Image.new("LA", (8, 8), (40, 255)), "PNG", (40, 40, 40)),
    ("palette", _palette(False), "PNG", (200, 0, 0)),
    ("palette-transparent", _palette(True), "PNG", (255, 255, 255)),
    ("cmyk-jpeg", Image.new("CMYK", (8, 8), (0, 255, 0, 0)), "JPEG", (255, 0, 255)),
    ("bilevel", Image.new("1", (8, 8), 1), "PNG", (255, 255, 255)),
    ("grey", Image.new("L", (8, 8), 77), "PNG", (77, 77, 77)),
]


@pytest.mark.parametrize("img, fmt, rgb", [c[1:] for c in MODE_CASES],
                         ids=[c[0] for c in MODE_CASES])
def test_every_image_mode_becomes_the_right_rgb(img, fmt, rgb, tmp_path):
    got = np.asarray(decode_rgb(_encode(img, fmt)))
    assert got.shape == (8, 8, 3) and got.dtype == np.uint8
    np.testing.assert_allclose(got[0, 0], rgb, atol=2)
    path = tmp_path / f"x.{fmt.lower()}"                     # the commands' reader too
    path.write_bytes(_encode(img, fmt))
    np.testing.assert_allclose((load_image(str(path), 8)[0, 0] + 1) * 127.5, rgb, atol=3)


UNREADABLE_CASES = [
    ("float-tiff", _encode(Image.new("F", (4, 4), 0.5), "TIFF"), "mode 'F' are not supported"),
    ("32-bit-int-tiff", _encode(Image.fromarray(np.full((4, 4), 70000, np.int32)), "TIFF"),
     "beyond 16 bits"),
    ("not-an-image", b"this is text, not a PNG", "UnidentifiedImageError"),
    ("truncated-png", _encode(Image.new("RGB", (64, 64), (1, 2, 3)))[:60], "OSError"),
]


@pytest.mark.parametrize("data, phrase", [c[1:] for c in UNREADABLE_CASES],
                         ids=[c[0] for c in UNREADABLE_CASES])
def test_unsupported_images_are_refused(data, phrase):
    with pytest.raises(UnreadableImageError, match=phrase):
        decode_rgb(data)


CLASS_CASES = [
    # (id, the stream's info, error phrase or None); the tiny model has 4 classes
    ("more-classes-than-model", {"source": "folder:/x", "num_classes": 12},
     "(folder:/x) has 12 classes but the model has var.num_classes=4"),
    ("one-more-class", {"source": "tokens", "num_classes": 5}, "--set var.num_classes=5"),
    ("as-many-classes", {"num_classes": 4}, None),
    ("fewer-classes", {"num_classes": 2}, None),
    ("stream-without-info", None, None),
]


@pytest.mark.parametrize("info, phrase", [c[1:] for c in CLASS_CASES],
                         ids=[c[0] for c in CLASS_CASES])
def test_dataset_class_count_is_checked_against_the_model(info, phrase):
    task = VARTask(tiny_var_config())
    stream = types.SimpleNamespace(info=info)
    if phrase is None:
        task.check_input(stream)
        return
    with pytest.raises(ValueError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        task.check_input(stream)
