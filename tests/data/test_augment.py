"""Tests of the paper's preprocessing (resize, crops, range) and the digits upscaling."""
import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from image_samples import encode_image
from var_jax.data import augment


@pytest.mark.parametrize("size,expected", [(256, 288), (512, 576), (32, 36), (16, 18)])
def test_mid_size_is_1_125x(size, expected):
    assert augment.mid_size(size) == expected


@pytest.mark.parametrize("wh,expected", [((500, 375), (384, 288)), ((375, 500), (288, 384)),
                                         ((300, 300), (288, 288)), ((100, 50), (576, 288))])
def test_resize_shorter_side(wh, expected):
    img = Image.new("RGB", wh)
    assert augment.resize_shorter_side(img, 288).size == expected


def test_eval_is_centre_crop():
    # 40 wide, 36 high: the shorter side is already 1.125 * 32, so no resize, only the crop.
    pixels = np.random.default_rng(0).integers(0, 256, (36, 40, 3)).astype(np.uint8)
    out = augment.preprocess(encode_image(pixels, "PNG"), 32, rng=None)
    chex.assert_shape(out, (32, 32, 3))
    expected = pixels[2:34, 4:36].astype(np.float32) / 127.5 - 1.0
    np.testing.assert_array_equal(out, expected)


def test_train_crop_is_a_window_drawn_from_the_rng():
    pixels = np.random.default_rng(1).integers(0, 256, (36, 40, 3)).astype(np.uint8)
    data = encode_image(pixels, "PNG")
    seen = set()
    for seed in range(40):
        out = augment.preprocess(data, 32, rng=np.random.default_rng(seed))
        again = augment.preprocess(data, 32, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(out, again)
        top, left = augment.crop_offsets(36, 40, 32, np.random.default_rng(seed))
        expected = pixels[top:top + 32, left:left + 32].astype(np.float32) / 127.5 - 1.0
        np.testing.assert_array_equal(out, expected)
        seen.add((top, left))
    tops, lefts = zip(*seen)
    assert set(tops) == set(range(5)) and set(lefts) == set(range(9)), seen


def test_output_range_shape_dtype_after_lanczos():
    pixels = np.zeros((375, 500, 3), np.uint8)
    pixels[:, 250:] = 255  # a hard edge: Lanczos overshoots, the result must still be clipped
    out = augment.preprocess(encode_image(pixels), 64, rng=np.random.default_rng(0))
    chex.assert_shape(out, (64, 64, 3))
    assert out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert out.min() == -1.0 and out.max() == 1.0


def test_grey_and_rgba_inputs_become_rgb():
    grey = Image.fromarray(np.full((20, 30), 255, np.uint8), "L")
    rgba = Image.fromarray(np.full((20, 30, 4), 255, np.uint8), "RGBA")
    for img in (grey, rgba):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out = augment.preprocess(buf.getvalue(), 16, rng=None)
        chex.assert_shape(out, (16, 16, 3))
        np.testing.assert_array_equal(out, 1.0)


@pytest.mark.parametrize("data", [b"this is not an image", encode_image(np.zeros((64, 64, 3),
                                                                                 np.uint8))[:300]])
def test_unreadable_bytes_raise_unreadable_image_error(data):
    with pytest.raises(augment.UnreadableImageError):
        augment.preprocess(data, 16, rng=None)


def test_crop_larger_than_image_is_a_value_error():
    with pytest.raises(ValueError, match="cannot crop"):
        augment.crop_offsets(10, 20, 16, None)


def test_bilinear_upscale_matches_jax_linear_resize():
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8)).astype(np.float32)
    for size in (16, 32, 24):
        m = augment.bilinear_matrix(8, size)
        np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)
        ours = np.einsum("sh,bhw,tw->bst", m, x, m)
        ref = jax.image.resize(jnp.asarray(x), (2, size, size), "linear", antialias=False)
        err = float(np.abs(ours - np.asarray(ref)).max())
        assert err < 1e-5, f"max err {err} at size {size}"


def test_upscale_digits_maps_0_16_to_pm1():
    raw = np.stack([np.zeros((8, 8)), np.full((8, 8), 16), np.full((8, 8), 8)]).astype(np.uint8)
    out = augment.upscale_digits(raw, 32)
    chex.assert_shape(out, (3, 32, 32))
    np.testing.assert_array_equal(out[0], -1.0)
    np.testing.assert_array_equal(out[1], 1.0)
    np.testing.assert_allclose(out[2], 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="image_size=4"):
        augment.upscale_digits(raw, 4)
