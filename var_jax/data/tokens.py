"""Pre-tokenized datasets: encode a split to VQ indices once, then stream the indices resumably."""
from __future__ import annotations

import io
import json
import os
import shutil
from typing import Callable

import numpy as np

from var_jax import atomic
from var_jax.data.pipeline import BatchStream, Layout

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
                progress: bool = False) -> dict:
    """Encodes every image of a fresh eval stream once; writes a directory `out_path`.

    stream: make_image_stream(..., train=False, process_index=0, process_count=1), unread.
      Images are encoded as eval preprocessing gives them (centre crops).
    encode_fn(images float32 (B, H, W, 3) in [-1, 1]) -> (B, L) int indices, or the list of
      per-scale (B, pn*pn) arrays of VQVAE.encode_indices (concatenated in scale order).
    index_dtype: on-disk dtype ("uint16" fits vocabularies up to 65536; "int32" otherwise).
    Writes idx.npy (N, L) index_dtype, label.npy (N,) int32 and meta.json, into a temporary
    directory renamed to `out_path` at the end, so an interrupted run leaves no partial dataset.
    Returns the metadata.
    """
    if stream.train:
        raise ValueError("pretokenize needs an eval stream (train=False): one pass over the "
                         "split with centre crops.")
    if stream.layout.process_count != 1 or stream.get_state()["position"] != 0:
        raise ValueError("pretokenize needs a fresh, single-process stream (process_index=0, "
                         "process_count=1, nothing read yet), so every record is encoded.")
    if os.path.exists(out_path) and not overwrite:
        raise ValueError(f"{out_path!r} exists; pass overwrite=True or another out_path.")
    tmp = f"{out_path}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        meta = _write_tokens(stream, encode_fn, tmp, index_dtype, progress)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(out_path):
        shutil.rmtree(out_path)
    os.replace(tmp, out_path)
    return meta


def _write_tokens(stream: BatchStream, encode_fn: Callable, out_dir: str,
                  index_dtype: str, progress: bool) -> dict:
    limit = np.iinfo(np.dtype(index_dtype)).max
    n = stream.num_records
    idx_NL, label_N, row = None, np.zeros((n,), np.int32), 0
    batches = stream
    if progress:
        from tqdm import tqdm
        batches = tqdm(stream, total=stream.batches_per_epoch, desc="pretokenize", unit="batch")
    for batch in batches:
        mask = batch["mask"]
        codes = _codes_BL(encode_fn(batch["image"]), len(mask))[mask]
        if codes.size and (codes.min() < 0 or codes.max() > limit):
            raise ValueError(f"indices span [{codes.min()}, {codes.max()}], outside "
                             f"{index_dtype}; pass index_dtype='int32'.")
        if idx_NL is None:
            idx_NL = np.lib.format.open_memmap(os.path.join(out_dir, "idx.npy"), mode="w+",
                                               dtype=index_dtype, shape=(n, codes.shape[1]))
        idx_NL[row:row + len(codes)] = codes
        label_N[row:row + len(codes)] = batch["label"][mask]
        row += len(codes)
    idx_NL.flush()
    buf = io.BytesIO()
    np.save(buf, label_N)
    atomic.write_bytes(os.path.join(out_dir, "label.npy"), buf.getvalue())
    meta = {"format": FORMAT, "num_records": n, "seq_len": int(idx_NL.shape[1]),
            "index_dtype": index_dtype, "num_skipped": stream.num_skipped,
            **{k: v for k, v in stream.info.items() if k != "class_names"}}
    atomic.write_json(os.path.join(out_dir, "meta.json"), meta)
    del idx_NL
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
    """Grain transform: position -> {"idx": int32 (L,), "label": int32}, read from the
    memory-mapped idx.npy / label.npy (opened once per process); eval adds "mask"."""

    def __init__(self, path: str, num_records: int, train: bool):
        self.path, self.num_records, self.train = path, num_records, train
        self._arrays = None

    def __getstate__(self):   # workers open their own memory maps
        return {**self.__dict__, "_arrays": None}

    def __call__(self, index) -> dict:
        if self._arrays is None:
            self._arrays = tuple(np.load(os.path.join(self.path, f), mmap_mode="r",
                                         allow_pickle=False) for f in ("idx.npy", "label.npy"))
        idx_NL, label_N = self._arrays
        index = int(index)
        real = index < self.num_records
        row = min(index, self.num_records - 1)
        example = {"idx": idx_NL[row].astype(np.int32) * real,
                   "label": np.int32(label_N[row] * real)}
        return example if self.train else {**example, "mask": np.bool_(real)}


def make_token_stream(path: str, batch_size: int, seed: int, train: bool,
                      process_index: int | None = None, process_count: int | None = None, *,
                      num_workers: int = 0, prefetch: int = 0) -> BatchStream:
    """Batches {"idx": int32 (b, L), "label": int32 (b,)} of a pretokenized directory.

    Same order, host split, eval "mask" and get_state()/set_state() as make_image_stream.
    """
    meta = read_token_meta(path)
    if process_index is None or process_count is None:
        import jax
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    layout = Layout(meta["num_records"], batch_size, seed, train, process_index, process_count)
    examples = layout.positions().map(TokenRows(path, meta["num_records"], train))
    return BatchStream(layout, examples, num_workers=num_workers, prefetch=prefetch,
                       name=f"tokens:{path}", info=meta)
