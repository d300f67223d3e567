"""The image stream: a source's records augmented and batched by Grain, bad images skipped."""
from __future__ import annotations

import logging

import jax
import numpy as np

from var_jax.data.augment import UnreadableImageError
from var_jax.data.pipeline import BatchStream, Layout, derived_seed
from var_jax.data.sources import open_records

log = logging.getLogger(__name__)

# A position gives up (RuntimeError) after this many unreadable records in a row.
MAX_CONSECUTIVE_UNREADABLE = 64


class LoadImage:
    """Grain transform: record index (+ augmentation rng for training) -> one example.

    An unreadable record is logged (once per record and process), counted in "skipped", and
    replaced by the next readable record in index order, augmented with the replaced
    position's random stream; so batches stay full and a pure function of the position.
    Positions past the records (eval padding) give zeros with "mask" False.
    """

    def __init__(self, records, train: bool):
        self.records = records
        self.train = train
        self._bad: set[int] = set()

    def _load(self, index: int, rng):
        if index in self._bad:
            return None
        try:
            return self.records.load(index, rng)
        except UnreadableImageError as e:
            self._bad.add(index)
            log.warning("skipping unreadable image %s: %s (replaced by another example; the "
                        "stream's num_skipped counts these)", self.records.describe(index), e)
            return None

    def __call__(self, index, rng=None) -> dict:
        index, n, size = int(index), self.records.num_records, self.records.image_size
        example = {} if self.train else {"mask": np.bool_(index < n)}
        if index >= n:
            return {"image": np.zeros((size, size, 3), np.float32), "label": np.int32(0),
                    "skipped": np.int32(0), **example}
        for k in range(min(MAX_CONSECUTIVE_UNREADABLE, n - 1) + 1):
            loaded = self._load((index + k) % n, rng)
            if loaded is not None:
                return {"image": loaded[0], "label": np.int32(loaded[1]),
                        "skipped": np.int32(k), **example}
        raise RuntimeError(f"{self.records.name}: {MAX_CONSECUTIVE_UNREADABLE} unreadable records "
                           f"in a row after record {index}; the dataset looks broken (see the "
                           "warnings above for the files).")


def make_image_stream(source: str, split: str, image_size: int, batch_size: int, seed: int,
                      train: bool, data_dir: str | None = None, manual_dir: str | None = None,
                      process_index: int | None = None, process_count: int | None = None, *,
                      num_workers: int = 0, prefetch: int = 2, views: int = 1) -> BatchStream:
    """A deterministic, resumable stream of host-local batches of images.

    Yields {"image": float32 (batch_size, image_size, image_size, 3) in [-1, 1],
    "label": int32 (batch_size,)}, plus "mask" bool (batch_size,) when train=False.

    source: "digits" | "imagenet2012" | "imagenette[/<config>]" | "folder:<path>" (TFDS datasets,
      prepared into `data_dir` as array_record on first use; imagenet2012 from `manual_dir`).
    split: a TFDS split ("train", "validation", "train[:90%]"...); digits has "train",
      "clf_train", "clf_test"; a folder has "train".
    batch_size: per host; the global batch is batch_size * process_count.
    seed: orders each epoch (a permutation keyed by (seed, epoch)) and draws each random crop
      (keyed by (seed, global position)).
    train: random crops and endless shuffled epochs (last incomplete global batch dropped);
      False: centre crops, one pass in record order, last batch padded (mask False).
    process_index / process_count: this host's share; default jax.process_index()/count().
    num_workers: Grain worker processes decoding batches (0: `prefetch` threads of this
      process decode them); prefetch: batches prepared ahead (per worker).
    views: eval only; > 1 makes that many passes with random crops keyed by (seed, pass,
      record): the augmented views `pretokenize` stores.
    State: stream.get_state() / set_state(); see BatchStream.
    """
    if views != 1 and train:
        raise ValueError(f"views={views} needs train=False (an ordered pass per view); training "
                         "streams draw new crops every epoch anyway.")
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    records = open_records(source, split, image_size, data_dir=data_dir, manual_dir=manual_dir,
                           allow_prepare=process_count == 1)
    layout = Layout(records.num_records, batch_size, seed, train, process_index, process_count,
                    passes=views)
    load = LoadImage(records, train)
    positions = layout.positions()
    examples = (positions.random_map(load, seed=derived_seed(seed, "augment"))
                if train or views > 1 else positions.map(load))
    info = {"source": source, "split": split, "image_size": int(image_size), "views": views,
            "num_classes": len(records.class_names), "class_names": records.class_names}
    return BatchStream(layout, examples, num_workers=num_workers, prefetch=prefetch,
                       name=records.name, info=info)


def load_split(source: str, split: str, image_size: int, *, data_dir: str | None = None,
               manual_dir: str | None = None, batch_size: int = 256
               ) -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory, eval preprocessing: (images (N, S, S, 3) float32, labels (N,)).

    Meant for small sets (the digits classifier splits, a few thousand reference images).
    """
    stream = make_image_stream(source, split, image_size, batch_size, 0, False, data_dir,
                               manual_dir, 0, 1, prefetch=0)
    batches = [(b["image"][b["mask"]], b["label"][b["mask"]]) for b in stream]
    return np.concatenate([i for i, _ in batches]), np.concatenate([l for _, l in batches])
