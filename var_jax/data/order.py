"""Which records each host reads, batch by batch: seeded per-epoch order, split across hosts."""
from __future__ import annotations

import dataclasses

import numpy as np


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}.")
    return int(value)


def epoch_permutation(seed: int, epoch: int, num_records: int) -> np.ndarray:
    """The training order of epoch `epoch`: a permutation of range(num_records) keyed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch, 0]).permutation(num_records)


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one example's augmentation, keyed by (seed, epoch, record index)."""
    return np.random.default_rng([seed, epoch, int(index), 1])


@dataclasses.dataclass(frozen=True)
class EpochOrder:
    """The global order of examples and this host's share of every global batch.

    A global batch is `batch_size * process_count` consecutive examples of the epoch's order;
    host `process_index` takes the `process_index`-th block of `batch_size` of it. The position
    in an epoch is counted in global examples, so a run can resume on another number of hosts
    with the same global batch and see exactly the same data.

    train: order = epoch_permutation(seed, epoch); epochs never end (the last incomplete global
      batch of each epoch is dropped).
    eval: order = 0..num_records-1, one pass; the last global batch is padded, and its padding
      slots are marked invalid.
    """
    num_records: int
    batch_size: int  # per host
    seed: int
    train: bool
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        _check_int("num_records", self.num_records, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("seed", self.seed, 0)
        _check_int("process_count", self.process_count, 1)
        _check_int("process_index", self.process_index, 0)
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
        return -(-self.num_records // self.global_batch)

    def next_batch_start(self, epoch: int, position: int) -> tuple[int, int] | None:
        """(epoch, position) where the next global batch starts, or None when eval is done."""
        if self.train:
            if position + self.global_batch > self.num_records:
                return epoch + 1, 0
            return epoch, position
        if epoch > 0 or position >= self.num_records:
            return None
        return epoch, position

    def host_slots(self, epoch: int, position: int, permutation: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(record indices (b,), valid (b,) bool) of this host in the global batch at `position`.

        `permutation` is epoch_permutation(seed, epoch, num_records) for training (passed in so
        callers can cache it) and None for eval. Invalid (padding) slots hold index 0.
        """
        start = position + self.process_index * self.batch_size
        slots = np.arange(start, start + self.batch_size)
        valid = slots < self.num_records
        slots = np.where(valid, slots, 0)
        indices = permutation[slots] if self.train else slots
        return indices.astype(np.int64), valid
