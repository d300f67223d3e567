"""A resumable, batch-size-independent sample set: N images written chunk by chunk, then one .npz.

Order: position p holds class `classes[p % C]`, its `p // C`-th image, so each contiguous split
(the Inception Score's) sees every class. Image (c, i) is drawn with the key
fold_in(fold_in(key(seed), c), i): it depends on nothing else, so neither the batch size, the
device count nor the host count changes it, and no two classes share noise.
Hosts: process k of P takes the k-th of P contiguous slices of the positions. Every chunk is a
run of consecutive positions saved atomically as `chunks/<start>.npz` (images and, when given,
Inception activations); a restarted run skips the positions already saved. The compiled calls
always have one shape (`call` images), so the chunk size does not change a bit either.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import zipfile
from typing import Callable

import jax
import numpy as np
from tqdm import tqdm

from var_jax.atomic import open_atomic, write_npz
from var_jax.atomic import write_json

CHUNK_DIR = "chunks"
SETTINGS_FILE = "settings.json"
SAMPLES_FILE = "samples.npz"
FEATURE_KEYS = ("pool", "logits", "spatial")


def position_labels(classes, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(class (N,), index within its class (N,)) of every position, classes interleaved."""
    classes = np.asarray(classes, np.int64)
    n = classes.size * per_class
    return classes[np.arange(n) % classes.size], np.arange(n) // classes.size


@jax.jit
def _fold(base, classes_B, index_B):
    return jax.vmap(lambda c, i: jax.random.fold_in(jax.random.fold_in(base, c), i))(
        classes_B, index_B)


def image_keys(seed: int, classes_B, index_B):
    """(B,) keys fold_in(fold_in(key(seed), class), index)."""
    return _fold(jax.random.key(seed), np.asarray(classes_B, np.uint32),
                 np.asarray(index_B, np.uint32))


def host_positions(num: int, process_index: int, process_count: int) -> np.ndarray:
    """This host's contiguous slice of range(num)."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, {process_count}).")
    return np.array_split(np.arange(num), process_count)[process_index]


def _chunk_files(out_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(out_dir, CHUNK_DIR, "[0-9]*.npz")))


def saved_positions(out_dir: str) -> set[int]:
    done: set[int] = set()
    for path in _chunk_files(out_dir):
        with np.load(path, allow_pickle=False) as z:
            done.update(z["positions"].tolist())
    return done


def check_settings(out_dir: str, settings: dict) -> None:
    """Record `settings` on the first run; on a resume, refuse different ones."""
    path = os.path.join(out_dir, SETTINGS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diff = {k: (old.get(k), settings.get(k)) for k in set(old) | set(settings)
                if old.get(k) != settings.get(k)}
        if diff:
            raise ValueError(f"{out_dir} holds a run with other settings ("
                             + ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in
                                         sorted(diff.items()))
                             + "); resume with the same flags or pick a new --out.")
    else:
        write_json(path, settings)


def _runs(positions: np.ndarray, size: int):
    """Chunks of at most `size` consecutive positions."""
    if positions.size == 0:
        return
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    for run in np.split(positions, breaks):
        for start in range(0, run.size, size):
            yield run[start:start + size]


@dataclasses.dataclass
class SampleSet:
    """What `generate` needs: labels per position, how to sample and (optionally) embed."""

    out_dir: str
    classes_N: np.ndarray
    index_N: np.ndarray
    seed: int
    sample_fn: Callable          # (labels (B,), keys (B,)) -> uint8 images (B, H, W, 3)
    features_fn: Callable | None = None  # uint8 images -> Activations (pool, logits, spatial)

    @property
    def num(self) -> int:
        return int(self.classes_N.size)

    def generate(self, chunk: int, call: int, process_index: int = 0, process_count: int = 1,
                 progress: bool = True) -> int:
        """Sample this host's missing positions; returns how many were new.

        `call`: images per compiled sampler/Inception call (all local devices); every call has
        this one shape, padded, since XLA's float rounding may differ between shapes. `chunk`:
        images per saved chunk, rounded up to a multiple of `call`; it does not change a bit.
        """
        if call < 1 or chunk < 1:
            raise ValueError(f"call={call} and chunk={chunk} must be >= 1.")
        chunk = -(-chunk // call) * call
        mine = host_positions(self.num, process_index, process_count)
        done = saved_positions(self.out_dir)
        todo = np.array([p for p in mine if p not in done], np.int64)
        bar = tqdm(total=mine.size, initial=mine.size - todo.size, unit="img",
                   desc="sampling", disable=not progress, dynamic_ncols=True)
        os.makedirs(os.path.join(self.out_dir, CHUNK_DIR), exist_ok=True)
        try:
            for positions in _runs(todo, chunk):
                parts = [self._call(positions[i:i + call], call)
                         for i in range(0, positions.size, call)]
                arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                write_npz(os.path.join(self.out_dir, CHUNK_DIR, f"{positions[0]:09d}.npz"),
                             positions=positions, **arrays)
                bar.update(positions.size)
        finally:
            bar.close()
        return int(todo.size)

    def _call(self, positions: np.ndarray, call: int) -> dict:
        n = positions.size
        padded = np.concatenate([positions, np.repeat(positions[-1:], call - n)])
        keys = image_keys(self.seed, self.classes_N[padded], self.index_N[padded])
        images = np.asarray(self.sample_fn(self.classes_N[padded], keys))
        out = {"images": images[:n]}
        if self.features_fn is not None:
            act = self.features_fn(images)
            out.update({k: np.asarray(getattr(act, k))[:n] for k in FEATURE_KEYS})
        return out


def _ordered_chunks(out_dir: str, num: int) -> list[str]:
    """Chunk files in position order; ValueError on a gap or a duplicate."""
    starts = []
    for path in _chunk_files(out_dir):
        with np.load(path, allow_pickle=False) as z:
            pos = z["positions"]
        starts.append((int(pos[0]), int(pos.size), path))
    starts.sort()
    expected, ordered = 0, []
    for start, n, path in starts:
        if start != expected:
            what = "a gap" if start > expected else "a duplicate"
            raise ValueError(f"{out_dir}: {what} at position {min(start, expected)} "
                             f"({path}); the sample set is incomplete or was edited.")
        ordered.append(path)
        expected = start + n
    if expected != num:
        raise ValueError(f"{out_dir} holds {expected} of {num} samples; run the same command "
                         "again to finish them.")
    return ordered


def assemble(out_dir: str, num: int, with_features: bool) -> dict:
    """Write `samples.npz` (arr_0 uint8 (N, H, W, 3), streamed in position order, atomically);
    return the activations {pool, logits, spatial} in the same order ({} without features)."""
    paths = _ordered_chunks(out_dir, num)
    with np.load(paths[0], allow_pickle=False) as z:
        shape = (num,) + z["images"].shape[1:]
    feats: dict[str, list] = {k: [] for k in FEATURE_KEYS} if with_features else {}
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": shape}
    with open_atomic(os.path.join(out_dir, SAMPLES_FILE)) as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("arr_0.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_2_0(member, header)
                for path in paths:
                    with np.load(path, allow_pickle=False) as z:
                        member.write(np.ascontiguousarray(z["images"], np.uint8).tobytes())
                        for k in feats:
                            feats[k].append(z[k])
    return {k: np.concatenate(v) for k, v in feats.items()}
