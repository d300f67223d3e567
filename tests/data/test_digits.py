"""Tests of the digits TFDS dataset: fixed disjoint splits, counts, values, caching."""
import os
import subprocess
import sys

import numpy as np
from sklearn.datasets import load_digits

from var_jax.data import load_split
from var_jax.data.digits import digits_split_indices, load_digits_split

SIZES = {"train": 1197, "clf_train": 300, "clf_test": 300}


def test_split_indices_are_fixed_disjoint_stratified_and_cover_all():
    labels = load_digits().target
    rows = digits_split_indices(labels)
    again = digits_split_indices(labels)
    assert {k: len(v) for k, v in rows.items()} == SIZES
    for name in rows:
        np.testing.assert_array_equal(rows[name], again[name])
    everything = np.concatenate(list(rows.values()))
    assert len(np.unique(everything)) == len(everything) == 1797
    for name in ("clf_train", "clf_test"):
        np.testing.assert_array_equal(np.bincount(labels[rows[name]]), np.full(10, 30))


def test_prepared_splits_hold_the_sklearn_images(digits_dir):
    digits = load_digits()
    rows = digits_split_indices(digits.target)
    for split, n in SIZES.items():
        images, labels = load_digits_split(split, digits_dir)
        assert images.shape == (n, 8, 8) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int32
        np.testing.assert_array_equal(images, digits.images[rows[split]].astype(np.uint8))
        np.testing.assert_array_equal(labels, digits.target[rows[split]])
        assert images.min() == 0 and images.max() == 16


def test_prepared_once_then_reused(digits_dir):
    version_dir = os.path.join(digits_dir, "var_jax_digits", "1.0.0")
    stamp = os.stat(os.path.join(version_dir, "dataset_info.json")).st_mtime_ns
    load_digits_split("clf_test", digits_dir)
    assert os.stat(os.path.join(version_dir, "dataset_info.json")).st_mtime_ns == stamp


def test_load_split_upscales_to_three_equal_channels_in_pm1(digits_dir):
    images, labels = load_split("digits", "clf_test", 16, data_dir=digits_dir, batch_size=128)
    assert images.shape == (300, 16, 16, 3) and images.dtype == np.float32
    assert labels.shape == (300,) and labels.dtype == np.int32
    assert images.min() == -1.0 and images.max() == 1.0
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    _, raw_labels = load_digits_split("clf_test", digits_dir)
    np.testing.assert_array_equal(labels, raw_labels)


def test_reading_a_prepared_dataset_does_not_import_tensorflow(digits_dir):
    code = ("import sys; from var_jax.data import make_image_stream; "
            f"s = make_image_stream('digits', 'train', 16, 8, 0, True, data_dir={digits_dir!r}); "
            "next(s); assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
