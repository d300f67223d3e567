"""Shared fixtures of the data tests: a prepared digits data_dir and small image files."""
import os

import numpy as np
import pytest

from image_samples import coloured_image, encode_image


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """A TFDS data_dir with the digits dataset prepared once for the whole session."""
    from var_jax.data.digits import load_digits_split

    data_dir = str(tmp_path_factory.mktemp("tfds_digits"))
    load_digits_split("train", data_dir)
    return data_dir


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """root/<class>/<images>: classes 'a_red' (0) and 'b_blue' (1), 5 good images each (one in
    a nested folder, sizes and formats mixed), plus a truncated JPEG and a text file named .png
    (12 records), a README.txt and a hidden folder that are ignored."""
    root = tmp_path_factory.mktemp("folder") / "imgs"
    rng = np.random.default_rng(0)
    sizes = [(40, 60), (60, 40), (36, 36), (50, 45), (45, 80)]
    for label, (name, channel) in enumerate([("a_red", 0), ("b_blue", 2)]):
        os.makedirs(root / name / "nested")
        for k, (h, w) in enumerate(sizes):
            fmt, ext = ("PNG", "png") if k % 2 else ("JPEG", "jpg")
            where = root / name / ("nested" if k == 4 else "") / f"img{k}.{ext}"
            where.write_bytes(encode_image(coloured_image(rng, h, w, channel), fmt))
    good = encode_image(coloured_image(rng, 40, 40, 0))
    (root / "a_red" / "trunc.jpg").write_bytes(good[:len(good) // 2])
    (root / "b_blue" / "fake.png").write_text("this is not an image")
    (root / "b_blue" / "README.txt").write_text("ignored: not an image extension")
    os.makedirs(root / ".cache" / "x")
    (root / ".cache" / "x" / "hidden.jpg").write_bytes(good)
    return str(root)
