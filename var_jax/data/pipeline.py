"""Grain pipelines of host-local batches: seeded epoch order, split across hosts, resumable."""
from __future__ import annotations

import dataclasses

import grain
import numpy as np
from absl import flags


def derived_seed(seed: int, purpose: str) -> int:
    """The 32-bit seed of one random transformation ("order", "augment"...) of a run's seed."""
    return int(np.random.SeedSequence([seed, *purpose.encode()]).generate_state(1)[0])


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}.")
    return int(value)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which record sits at each global position, and which positions each host reads.

    Global batch g is positions [g*G, (g+1)*G) with G = batch_size * process_count; host
    `process_index` reads the `process_index`-th block of `batch_size` of it. Positions count
    global examples, so the data of step k depends on the seed and G, not on the host count.

    train: epoch e holds the first batches_per_epoch * G records of a permutation keyed by
      (seed, e); epochs never end (the last incomplete global batch is dropped).
    eval: records 0..num_records-1 in order, padded to whole global batches (a padding slot
      holds index >= num_records), `passes` times over (one pass unless pre-tokenizing views).
    """
    num_records: int
    batch_size: int  # per host
    seed: int
    train: bool
    process_index: int = 0
    process_count: int = 1
    passes: int = 1

    def __post_init__(self):
        for name, low in (("num_records", 1), ("batch_size", 1), ("seed", 0),
                          ("process_count", 1), ("process_index", 0), ("passes", 1)):
            _check_int(name, getattr(self, name), low)
        if self.process_index >= self.process_count:
            raise ValueError(f"process_index={self.process_index} must be < "
                             f"process_count={self.process_count}.")
        if self.train and self.global_batch > self.num_records:
            raise ValueError(
                f"global batch {self.global_batch} (batch_size={self.batch_size} x "
                f"{self.process_count} hosts) exceeds the {self.num_records} examples of the "
                "split; use a smaller batch_size.")

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.process_count

    @property
    def batches_per_epoch(self) -> int:
        if self.train:
            return self.num_records // self.global_batch
        return -(-self.num_records // self.global_batch) * self.passes

    def positions(self) -> grain.MapDataset:
        """The record index at every global position (endless for train)."""
        if not self.train:
            padded = self.batches_per_epoch // self.passes * self.global_batch
            return grain.MapDataset.range(padded).repeat(self.passes, reseed_each_epoch=False)
        order = grain.MapDataset.range(self.num_records).shuffle(
            seed=derived_seed(self.seed, "order"))   # reshuffled by repeat() every epoch
        return order[:self.batches_per_epoch * self.global_batch].repeat()


class BatchStream:
    """Iterates this host's batches of `examples`, a Grain MapDataset over global positions.

    examples[i] is the example at position i (a dict of numpy values, as `layout.positions()`
    mapped through the loading transform). An optional int "skipped" field counts unreadable
    records replaced; it is summed into `num_skipped` and not returned. Eval batches carry
    the examples' "mask" (False on padding).

    State is {"epoch", "position", "num_skipped", "seed", "num_records", "global_batch"}
    (JSON-safe ints): the next batch starts at global example `position` of epoch `epoch`.
    `set_state` on a fresh stream of the same data, seed and global batch continues
    bit-for-bit, on any number of hosts and workers. num_workers > 0 decodes in that many
    Grain worker processes; prefetch batches are prepared ahead in threads. Neither changes
    what is returned.
    """

    def __init__(self, layout: Layout, examples: grain.MapDataset, *, num_workers: int = 0,
                 prefetch: int = 0, name: str = "stream", info: dict | None = None):
        _check_int("num_workers", num_workers, 0)
        _check_int("prefetch", prefetch, 0)
        self.layout = layout
        self.name = name
        self.info = dict(info or {})  # what the batches are (source, split, image size...)
        self._batches = examples.batch(layout.batch_size)[
            layout.process_index::layout.process_count]
        self._workers, self._prefetch = num_workers, prefetch
        self._next = 0          # global batches returned
        self._num_skipped = 0
        self._iterator = None

    train = property(lambda self: self.layout.train)
    num_records = property(lambda self: self.layout.num_records)
    batches_per_epoch = property(lambda self: self.layout.batches_per_epoch)
    num_skipped = property(lambda self: self._num_skipped,
                           doc="Unreadable records replaced in the batches returned so far.")

    def _start(self):
        threads = 1 if self._workers else self._prefetch
        ds = self._batches[self._next:].to_iter_dataset(
            grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))
        if self._workers:
            if not flags.FLAGS.is_parsed():   # grain 0.2.18 reads an absl flag here (grain#1355)
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self._workers, per_worker_buffer_size=max(1, self._prefetch)))
        return iter(ds)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = self._start()
        batch = dict(next(self._iterator))
        self._next += 1
        self._num_skipped += int(np.sum(batch.pop("skipped", 0)))
        return batch

    def get_state(self) -> dict:
        g, per_epoch = self.layout.global_batch, self.layout.batches_per_epoch
        epoch, batch = divmod(self._next, per_epoch) if self.train else (0, self._next)
        return {"epoch": epoch, "position": batch * g, "num_skipped": self._num_skipped,
                "seed": self.layout.seed, "num_records": self.num_records, "global_batch": g}

    def set_state(self, state: dict) -> None:
        g = self.layout.global_batch
        for key, have in (("seed", self.layout.seed), ("num_records", self.num_records),
                          ("global_batch", g)):
            if key in state and int(state[key]) != have:
                raise ValueError(f"{self.name}: saved state has {key}={state[key]} but this stream "
                                 f"has {key}={have}; rebuild the stream with the data, seed and "
                                 "global batch of the run being resumed.")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or position < 0 or position % g or (epoch and not self.train):
            raise ValueError(f"{self.name}: invalid state epoch={epoch}, position={position} "
                             f"for global batch {g}.")
        self.close()
        self._next = epoch * self.batches_per_epoch + position // g
        self._num_skipped = int(state.get("num_skipped", 0))

    def close(self) -> None:
        """Stops the worker processes and threads; iterating again restarts them."""
        if self._iterator is not None:
            getattr(self._iterator, "close", lambda: None)()
            self._iterator = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
