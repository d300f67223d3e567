"""scikit-learn's bundled 8x8 handwritten digits as a TFDS dataset with fixed, disjoint splits."""
from __future__ import annotations

import numpy as np

from var_jax.data.tf_env import import_tfds, prepare_builder

tfds = import_tfds()

# Per class, this many images go to each classifier split; the rest (1197 of 1797) to "train".
PER_CLASS_CLF = 30
SPLIT_SEED = 20240406
SPLITS = ("train", "clf_train", "clf_test")


def digits_split_indices(labels_N: np.ndarray, per_class: int = PER_CLASS_CLF,
                         seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Stratified, fixed split of row indices: {"train", "clf_train", "clf_test"}, each sorted.

    For every class, a seeded permutation of its rows gives `per_class` rows to "clf_test",
    the next `per_class` to "clf_train" and the rest to "train". The generative models train
    on "train"; the judging classifier trains on "clf_train" and is scored on "clf_test".
    """
    rng = np.random.default_rng(seed)
    parts = {name: [] for name in SPLITS}
    for c in np.unique(labels_N):
        rows = rng.permutation(np.flatnonzero(labels_N == c))
        if len(rows) < 2 * per_class + 1:
            raise ValueError(f"class {c} has {len(rows)} images; need more than {2 * per_class}.")
        parts["clf_test"].append(rows[:per_class])
        parts["clf_train"].append(rows[per_class:2 * per_class])
        parts["train"].append(rows[2 * per_class:])
    return {name: np.sort(np.concatenate(p)) for name, p in parts.items()}


class VarJaxDigits(tfds.core.GeneratorBasedBuilder):
    """1797 8x8 grey digits (values 0..16) from `sklearn.datasets.load_digits`; no download."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Splits train/clf_train/clf_test = 1197/300/300, stratified."}

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=("UCI handwritten digits as shipped inside scikit-learn: 8x8 grey "
                         "images with values 0..16, 10 classes. Fixed stratified splits: "
                         "train (generative models), clf_train/clf_test (a judging classifier)."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(8, 8), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                "index": tfds.features.Scalar(dtype=np.int32),  # row in load_digits()
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        )

    def _split_generators(self, dl_manager):
        # local: scikit-learn (the digits' source) only while preparing the dataset
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = digits.images.astype(np.uint8)
        labels = digits.target.astype(np.int64)
        rows = digits_split_indices(labels)
        return {name: self._generate_examples(images, labels, rows[name]) for name in SPLITS}

    def _generate_examples(self, images, labels, rows):
        for i in rows:
            yield int(i), {"image": images[i], "label": int(labels[i]), "index": int(i)}


def load_digits_split(split: str, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 8, 8) uint8 in 0..16, labels (N,) int32) of a split, in load_digits() order.

    Prepares the TFDS dataset into `data_dir` (TFDS's default when None) on first use.
    """
    if split not in SPLITS:
        raise ValueError(f"digits has no split {split!r}; use one of {SPLITS}.")
    builder = VarJaxDigits(data_dir=data_dir)
    if not builder.is_prepared():
        prepare_builder(builder)
    source = builder.as_data_source(split)
    examples = source.__getitems__(list(range(len(source))))
    order = np.argsort([int(ex["index"]) for ex in examples])
    images = np.stack([examples[i]["image"] for i in order]).astype(np.uint8)
    labels = np.asarray([examples[i]["label"] for i in order], np.int32)
    return images, labels
