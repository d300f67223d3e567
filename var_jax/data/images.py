"""The image stream: a source's records augmented and batched, unreadable images skipped."""
from __future__ import annotations

import concurrent.futures
import logging
import os
import threading

import numpy as np

from var_jax.data.augment import UnreadableImageError
from var_jax.data.order import EpochOrder, example_rng
from var_jax.data.sources import open_records
from var_jax.data.stream import ResumableStream

log = logging.getLogger(__name__)

# A batch slot gives up (RuntimeError) after this many unreadable records in a row.
MAX_CONSECUTIVE_UNREADABLE = 64


class ImageBatchLoader:
    """load_batch for ResumableStream: reads, decodes and augments one host batch.

    An unreadable record is logged (once per record), counted, and replaced by the next
    readable record in index order (augmented with the replaced slot's random stream), so
    batches stay full and stay a pure function of (seed, epoch, position).
    """

    def __init__(self, records, seed: int, train: bool, num_workers: int):
        self.records = records
        self.seed = seed
        self.train = train
        self._bad: set[int] = set()
        self._lock = threading.Lock()
        self._pool = (concurrent.futures.ThreadPoolExecutor(num_workers, "decode")
                      if records.threaded and num_workers > 1 else None)

    def _decode(self, index: int, record, rng) -> np.ndarray | None:
        if index in self._bad:
            return None
        try:
            return self.records.decode(record, rng)
        except UnreadableImageError as e:
            with self._lock:
                first = index not in self._bad
                self._bad.add(index)
            if first:
                log.warning("skipping unreadable image %s: %s (replaced by another example; "
                            "the stream's num_skipped counts these)",
                            self.records.describe(index, record), e)
            return None

    def _replacement(self, index: int, rng) -> tuple[np.ndarray, int]:
        n = self.records.num_records
        for k in range(1, min(MAX_CONSECUTIVE_UNREADABLE, n - 1) + 1):
            candidate = (index + k) % n
            record = self.records.read([candidate])[0]
            image = self._decode(candidate, record, rng)
            if image is not None:
                return image, self.records.label(record)
        raise RuntimeError(f"{self.records.name}: {MAX_CONSECUTIVE_UNREADABLE} unreadable records "
                           f"in a row after record {index}; the dataset looks broken (see the "
                           "warnings above for the files).")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __call__(self, epoch: int, indices: np.ndarray, valid: np.ndarray):
        live = [int(i) for i, ok in zip(indices, valid) if ok]
        records = self.records.read(live)
        with_crop = self.train and self.records.random_crop
        rngs = [example_rng(self.seed, epoch, i) if with_crop else None for i in live]
        mapper = self._pool.map if self._pool is not None else map
        images = list(mapper(self._decode, live, records, rngs))
        labels = [self.records.label(r) for r in records]
        skipped = 0
        for j, image in enumerate(images):
            if image is None:
                skipped += 1
                images[j], labels[j] = self._replacement(live[j], rngs[j])
        size = self.records.image_size
        image_b = np.zeros((len(indices), size, size, 3), np.float32)
        label_b = np.zeros((len(indices),), np.int32)
        if live:
            image_b[valid] = np.stack(images)
            label_b[valid] = labels
        return {"image": image_b, "label": label_b}, skipped


def make_image_stream(source: str, split: str, image_size: int, batch_size: int, seed: int,
                      train: bool, data_dir: str | None = None, manual_dir: str | None = None,
                      process_index: int | None = None, process_count: int | None = None, *,
                      num_workers: int | None = None, prefetch: int = 2) -> ResumableStream:
    """A deterministic, resumable stream of host-local batches of images.

    Yields {"image": float32 (batch_size, image_size, image_size, 3) in [-1, 1],
    "label": int32 (batch_size,)}, plus "mask" bool (batch_size,) when train=False.

    source: "digits" | "imagenet2012" | "imagenette[/<config>]" | "folder:<path>" (TFDS datasets,
      prepared into `data_dir` as array_record on first use; imagenet2012 from `manual_dir`).
    split: a TFDS split ("train", "validation", "train[:90%]"...); digits has "train",
      "clf_train", "clf_test"; a folder has "train".
    batch_size: per host; the global batch is batch_size * process_count.
    seed: orders each epoch (a permutation keyed by (seed, epoch)) and draws each random crop
      (keyed by (seed, epoch, record index)).
    train: random crops and endless shuffled epochs (last incomplete global batch dropped);
      False: centre crops, one pass in record order, last batch padded (mask False).
    process_index / process_count: this host's share; default jax.process_index()/count().
    num_workers: decoding threads (default: the CPU count, at most 16); prefetch: batches
      prepared ahead in the background.
    State: stream.get_state() / set_state(); see ResumableStream.
    """
    if process_index is None or process_count is None:
        import jax
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    records = open_records(source, split, image_size, data_dir=data_dir, manual_dir=manual_dir,
                           allow_prepare=process_count == 1)
    order = EpochOrder(records.num_records, batch_size, seed, train, process_index, process_count)
    if num_workers is None:
        num_workers = min(16, os.cpu_count() or 1)
    loader = ImageBatchLoader(records, seed, train, num_workers)
    info = {"source": source, "split": split, "image_size": int(image_size),
            "num_classes": len(records.class_names), "class_names": records.class_names}
    return ResumableStream(order, loader, prefetch=prefetch, name=records.name, info=info)


def load_split(source: str, split: str, image_size: int, *, data_dir: str | None = None,
               manual_dir: str | None = None, batch_size: int = 256
               ) -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory, eval preprocessing: (images (N, S, S, 3) float32, labels (N,)).

    Meant for small sets (the digits classifier splits, a few thousand reference images).
    """
    stream = make_image_stream(source, split, image_size, batch_size, 0, False, data_dir,
                               manual_dir, 0, 1, prefetch=0)
    images, labels = [], []
    for batch in stream:
        images.append(batch["image"][batch["mask"]])
        labels.append(batch["label"][batch["mask"]])
    stream.close()
    return np.concatenate(images), np.concatenate(labels)
