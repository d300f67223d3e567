"""A deterministic, resumable iterator of host-local batches with JSON-serialisable state."""
from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
from typing import Callable

import numpy as np

from var_jax.data.order import EpochOrder, epoch_permutation

# load_batch(epoch, indices (b,), valid (b,)) -> (batch dict of numpy arrays, number skipped);
# a `close()` method on it, if any, is called by ResumableStream.close().
LoadBatch = Callable[[int, np.ndarray, np.ndarray], "tuple[dict[str, np.ndarray], int]"]


class ResumableStream:
    """Iterates batches whose content is a pure function of (seed, epoch, position).

    State is {"epoch", "position", "num_skipped", "seed", "num_records"} (plain ints, JSON-safe):
    the batch returned next starts at global example `position` of epoch `epoch`. Restoring it
    with `set_state` on a fresh stream of the same data and seed continues bit-for-bit, also on
    another number of hosts when the global batch is the same. Eval streams (train=False) make
    one pass and add "mask" (b,) bool to every batch (False on padding slots of the last batch).

    With `prefetch` > 0 a background thread prepares that many batches ahead; it never changes
    what is returned, only when it is computed.
    """

    def __init__(self, order: EpochOrder, load_batch: LoadBatch, *, prefetch: int = 0,
                 name: str = "stream", info: dict | None = None):
        if prefetch < 0:
            raise ValueError(f"prefetch={prefetch} must be >= 0.")
        self.order = order
        self.name = name
        self.info = dict(info or {})  # what the batches are (source, split, image size...)
        self._load_batch = load_batch
        self._prefetch = prefetch
        self._epoch = 0
        self._position = 0
        self._num_skipped = 0
        self._queue: collections.deque = collections.deque()
        self._permutations: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._executor = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
                          if prefetch else None)

    @property
    def train(self) -> bool:
        return self.order.train

    @property
    def num_records(self) -> int:
        return self.order.num_records

    @property
    def batches_per_epoch(self) -> int:
        return self.order.batches_per_epoch

    @property
    def num_skipped(self) -> int:
        """Unreadable examples replaced so far in the batches returned (kept across set_state)."""
        return self._num_skipped

    def _permutation(self, epoch: int) -> np.ndarray:
        with self._lock:  # the prefetch thread and the caller may both ask
            if epoch not in self._permutations:
                if len(self._permutations) >= 2:
                    del self._permutations[min(self._permutations)]
                self._permutations[epoch] = epoch_permutation(
                    self.order.seed, epoch, self.order.num_records)
            return self._permutations[epoch]

    def _compute(self, epoch: int, position: int) -> tuple[dict[str, np.ndarray], int]:
        perm = self._permutation(epoch) if self.order.train else None
        indices, valid = self.order.host_slots(epoch, position, perm)
        batch, skipped = self._load_batch(epoch, indices, valid)
        if not self.order.train:
            batch["mask"] = valid
        return batch, skipped

    def _starts(self):
        """Batch starts (epoch, position) from the current state on."""
        epoch, position = self._epoch, self._position
        while (start := self.order.next_batch_start(epoch, position)) is not None:
            yield start
            epoch, position = start[0], start[1] + self.order.global_batch

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        starts = list(itertools.islice(self._starts(), self._prefetch + 1))
        if not starts:
            raise StopIteration
        if self._executor is None:
            batch, skipped = self._compute(*starts[0])
        else:
            if self._queue and self._queue[0][0] != starts[0]:
                self._drop_queue()
            for start in starts[len(self._queue):]:
                self._queue.append((start, self._executor.submit(self._compute, *start)))
            batch, skipped = self._queue.popleft()[1].result()
        self._epoch, self._position = starts[0][0], starts[0][1] + self.order.global_batch
        self._num_skipped += skipped
        return batch

    def _drop_queue(self):
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()

    def get_state(self) -> dict:
        return {"epoch": self._epoch, "position": self._position,
                "num_skipped": self._num_skipped, "seed": self.order.seed,
                "num_records": self.order.num_records}

    def set_state(self, state: dict) -> None:
        for key in ("seed", "num_records"):
            if key in state and int(state[key]) != getattr(self.order, key):
                raise ValueError(f"{self.name}: saved state has {key}={state[key]} but this stream "
                                 f"has {key}={getattr(self.order, key)}; rebuild the stream with "
                                 "the data and seed of the run being resumed.")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or position < 0:
            raise ValueError(f"{self.name}: invalid state epoch={epoch}, position={position}.")
        self._drop_queue()
        self._epoch, self._position = epoch, position
        self._num_skipped = int(state.get("num_skipped", 0))

    def close(self) -> None:
        """Stops the background threads; the stream still works afterwards, single-threaded."""
        self._drop_queue()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if hasattr(self._load_batch, "close"):
            self._load_batch.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
