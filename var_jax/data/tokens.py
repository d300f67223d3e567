"""Pre-tokenized datasets: encode a split to VQ indices once, then stream the indices resumably."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Callable

import jax
import numpy as np
from tqdm import tqdm

from var_jax import atomic
from var_jax.data.pipeline import BatchStream, Layout, derived_seed

FORMAT = "var_jax.tokens/1"


def _codes_BL(codes, batch: int) -> np.ndarray:
    """encode_fn output ((B, L) or a list of (B, pn*pn) per scale) -> (B, L) integer array."""
    if isinstance(codes, (list, tuple)):
        codes = np.concatenate([np.asarray(c).reshape(batch, -1) for c in codes], axis=1)
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != batch or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"encode_fn must return integer indices of shape (B={batch}, L) or a "
                         f"list of (B, pn*pn) per scale; got {codes.dtype} {codes.shape}.")
    return codes


def pretokenize(stream: BatchStream, encode_fn: Callable, out_path: str, *,
                index_dtype: str = "uint16", overwrite: bool = False,
                shard_batches: int = 64) -> dict:
    """Encodes every image of a fresh eval stream once per view; writes a directory `out_path`.

    stream: make_image_stream(..., train=False, process_index=0, process_count=1, views=K),
      unread. K = 1: the eval preprocessing (centre crops); K > 1: K random crops per image,
      keyed by (the stream's seed, view, record); training then reads one view per epoch.
    encode_fn(images float32 (B, H, W, 3) in [-1, 1]) -> (B, L) int indices, or the list of
      per-scale (B, pn*pn) arrays of VQVAE.encode_indices (concatenated in scale order).
    index_dtype: on-disk dtype ("uint16" fits vocabularies up to 65536; "int32" otherwise).
    Writes idx.npy (N, L), or (N, K, L) for K > 1, of index_dtype, label.npy (N,) int32 and
    meta.json into `out_path`.partial, renamed to `out_path` at the end; a progress bar on
    stderr. Every `shard_batches` batches the arrays are flushed, then progress.json records the
    stream state: run again after an interruption (same stream and encoder), it goes on from
    there and writes the files of an uninterrupted run; other settings start over.
    """
    if stream.train:
        raise ValueError("pretokenize needs an eval stream (train=False): one pass over the "
                         "split per view.")
    if stream.layout.process_count != 1 or stream.get_state()["position"] != 0:
        raise ValueError("pretokenize needs a fresh, single-process stream (process_index=0, "
                         "process_count=1, nothing read yet), so every record is encoded.")
    if os.path.exists(out_path) and not overwrite:
        raise ValueError(f"{out_path!r} exists; pass overwrite=True or another out_path.")
    work = f"{out_path}.partial"
    try:
        meta = _write_tokens(stream, encode_fn, work, index_dtype, shard_batches)
    except BaseException:
        if not os.path.exists(os.path.join(work, "progress.json")):
            shutil.rmtree(work, ignore_errors=True)   # nothing worth resuming
        raise
    shutil.rmtree(out_path, ignore_errors=True)   # overwrite=True
    os.replace(work, out_path)
    return meta


def _write_tokens(stream: BatchStream, encode_fn: Callable, work: str, index_dtype: str,
                  shard_batches: int) -> dict:
    limit = np.iinfo(np.dtype(index_dtype)).max
    n, views = stream.num_records, stream.layout.passes
    info = {k: v for k, v in stream.info.items() if k != "class_names"}
    key = json.loads(json.dumps({"num_records": n, "global_batch": stream.layout.global_batch,
                                 "seed": stream.layout.seed, "index_dtype": index_dtype, **info}))
    record = os.path.join(work, "progress.json")
    saved = json.loads(pathlib.Path(record).read_text()) if os.path.exists(record) else None
    if saved is None or saved["key"] != key:
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        saved = None
    else:
        stream.set_state(saved["state"])
    label_N = np.lib.format.open_memmap(os.path.join(work, "label.npy"), "r+" if saved else "w+",
                                        np.int32, (n,))
    idx_NKL = np.lib.format.open_memmap(os.path.join(work, "idx.npy"), "r+") if saved else None
    done, first = (saved["done"], saved["batches"]) if saved else (0, 0)
    bar = tqdm(stream, total=stream.batches_per_epoch, initial=first, desc="pretokenize")
    for k, batch in enumerate(bar, start=first + 1):
        mask = batch["mask"]
        codes = _codes_BL(encode_fn(batch["image"]), len(mask))[mask]
        if codes.size and (codes.min() < 0 or codes.max() > limit):
            raise ValueError(f"indices span [{codes.min()}, {codes.max()}], outside "
                             f"{index_dtype}; pass index_dtype='int32'.")
        if idx_NKL is None:
            shape = (n, codes.shape[1]) if views == 1 else (n, views, codes.shape[1])
            idx_NKL = np.lib.format.open_memmap(os.path.join(work, "idx.npy"), "w+",
                                                index_dtype, shape)
        view, row = np.divmod(np.arange(done, done + len(codes)), n)   # passes are view-major
        idx_NKL[(row,) if views == 1 else (row, view)] = codes
        label_N[row] = batch["label"][mask]
        done += len(codes)
        if k % shard_batches == 0 or k == stream.batches_per_epoch:
            idx_NKL.flush()
            label_N.flush()
            atomic.write_json(record, {"key": key, "state": stream.get_state(), "done": done,
                                       "batches": k})
    meta = {"format": FORMAT, "num_records": n, "seq_len": int(idx_NKL.shape[-1]),
            "index_dtype": index_dtype, "num_skipped": stream.num_skipped,
            "seed": stream.layout.seed, **info}
    atomic.write_json(os.path.join(work, "meta.json"), meta)
    os.unlink(record)
    return meta


def read_token_meta(path: str) -> dict:
    """The meta.json of a pretokenized directory; ValueError when it is not one."""
    meta_path = os.path.join(path, "meta.json")
    if not os.path.isfile(meta_path):
        raise ValueError(f"{path!r} is not a pretokenized dataset (no meta.json); make one with "
                         "var_jax.data.pretokenize.")
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} has format {meta.get('format')!r}; expected {FORMAT!r}.")
    return meta


class TokenRows:
    """Grain transform: position (+ rng picking one of K views) -> {"idx": int32 (L,),
    "label": int32}, from the memory-mapped idx.npy / label.npy (opened once per process);
    eval reads view 0 and adds "mask"."""

    def __init__(self, path: str, num_records: int, train: bool):
        self.path, self.num_records, self.train = path, num_records, train
        self._arrays = None

    def __getstate__(self):   # workers open their own memory maps
        return {**self.__dict__, "_arrays": None}

    def __call__(self, index, rng=None) -> dict:
        if self._arrays is None:
            self._arrays = tuple(np.load(os.path.join(self.path, f), mmap_mode="r",
                                         allow_pickle=False) for f in ("idx.npy", "label.npy"))
        idx, label_N = self._arrays
        real, at = int(index) < self.num_records, min(int(index), self.num_records - 1)
        row = idx[at]
        if row.ndim == 2:   # (K, L): one view per epoch (rng keyed by position)
            row = row[int(rng.integers(len(row))) if rng is not None else 0]
        example = {"idx": row.astype(np.int32) * real, "label": np.int32(label_N[at] * real)}
        return example if self.train else {**example, "mask": np.bool_(real)}


def make_token_stream(path: str, batch_size: int, seed: int, train: bool,
                      process_index: int | None = None, process_count: int | None = None, *,
                      num_workers: int = 0, prefetch: int = 0) -> BatchStream:
    """Batches {"idx": int32 (b, L), "label": int32 (b,)} of a pretokenized directory.

    Same order, host split, eval "mask" and get_state()/set_state() as make_image_stream.
    With K views, training reads a view drawn from (seed, global position): each epoch a
    fresh choice per image; eval reads view 0.
    """
    meta = read_token_meta(path)
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    layout = Layout(meta["num_records"], batch_size, seed, train, process_index, process_count)
    rows, positions = TokenRows(path, meta["num_records"], train), layout.positions()
    examples = (positions.random_map(rows, seed=derived_seed(seed, "view"))
                if train and meta.get("views", 1) > 1 else positions.map(rows))
    return BatchStream(layout, examples, num_workers=num_workers, prefetch=prefetch,
                       name=f"tokens:{path}", info=meta)
