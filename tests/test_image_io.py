import numpy as np
import pytest
from PIL import Image

from var_jax import image_io


def test_to_uint8_rounds_half_up_and_clamps():
    x = np.array([-0.1, 0.0, 0.4 / 255, 0.6 / 255, 1.45 / 255, 0.5, 1.0, 1.2], np.float32)
    np.testing.assert_array_equal(image_io.to_uint8(x), [0, 0, 0, 1, 1, 128, 255, 255])
    k = np.arange(256)
    np.testing.assert_array_equal(image_io.to_uint8(k / 127.5 - 1.0, low=-1.0), k)
    u8 = np.arange(256, dtype=np.uint8)
    assert image_io.to_uint8(u8) is u8


def test_grid_layout_gap_and_zoom(tmp_path):
    imgs = np.random.default_rng(0).uniform(size=(5, 8, 6, 3))
    path = image_io.save_grid(tmp_path / "s" / "grid.png", imgs, cols=3, gap=2, zoom=2)
    arr = np.asarray(Image.open(path))
    assert arr.shape == (2 * 16 + 2, 3 * 12 + 2 * 2, 3)          # 3 columns x 2 rows
    u8 = image_io.to_uint8(imgs)
    np.testing.assert_array_equal(arr[:16:2, :12:2], u8[0])          # zoomed by repetition
    np.testing.assert_array_equal(arr[18::2, 14:26:2], u8[4])        # row 2, column 2
    assert (arr[16:18] == 255).all() and (arr[:, 12:14] == 255).all()  # white gaps
    assert (arr[18:, 28:] == 255).all()                              # the missing 6th image


def test_grid_of_one_channel_writes_greyscale(tmp_path):
    imgs = np.linspace(0, 1, 2 * 4 * 4).reshape(2, 4, 4, 1)
    arr = np.asarray(Image.open(image_io.save_grid(tmp_path / "g.png", imgs, cols=2, gap=0)))
    assert arr.shape == (4, 8)
    np.testing.assert_array_equal(arr[:, 4:], image_io.to_uint8(imgs[1, ..., 0]))


def test_load_image_names_the_bad_file(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="x.png"):
        image_io.load_image(str(bad), 8)
