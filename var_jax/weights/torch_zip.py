"""Read PyTorch `.pth` state dicts (torch's zip format) into numpy, without PyTorch or pickled code.

The pickle runs on a restricted machine (`torch_pickle`) that resolves allow-listed globals to
stand-ins and returns tensors as validated references. Only then is anything read: each storage
is one uncompressed zip entry of exactly the declared size, and all storages together must fit
in the file, so a small file can never make the loader allocate much more than its own size.
"""
from __future__ import annotations

import collections
import io
import os
import struct
import zipfile
import zlib
from typing import Any, BinaryIO, Callable

import ml_dtypes
import numpy as np

from var_jax.weights.torch_pickle import (CheckpointFormatError, CorruptCheckpointError,
                                          StorageRef, StorageType, TensorRef,
                                          UnsafeCheckpointError, describe, run_pickle)

__all__ = ["CheckpointFormatError", "CorruptCheckpointError", "UnsafeCheckpointError",
           "load_torch_state_dict"]

MAX_PICKLE_BYTES = 32 << 20   # a state dict's pickle is ~100 bytes per tensor
_SMALL_ENTRY_BYTES = 64        # the byteorder entry: "little" or "big"
_OUTPUT_SLACK_BYTES = 1 << 20  # tensors may repeat storage (views, expand) up to 2x file + this


class _Archive:
    """The zip container: its entries, checked before any of their bytes are read."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.file_size = f.seek(0, io.SEEK_END)
        try:
            with zipfile.ZipFile(f) as z:
                infos = z.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
                struct.error, NotImplementedError, UnicodeDecodeError, OverflowError) as e:
            raise CorruptCheckpointError(
                f"not a PyTorch zip checkpoint ({e}): the file is truncated, corrupt, or in the "
                f"legacy pre-1.6 format") from None
        self.infos = {i.filename: i for i in infos}
        if len(self.infos) != len(infos):
            dup = next(n for n, c in collections.Counter(i.filename for i in infos).items()
                       if c > 1)
            raise CorruptCheckpointError(f"the archive lists entry {dup!r} twice; it was "
                                         f"tampered with")
        pkls = [n for n in self.infos if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise CorruptCheckpointError(
                f"expected exactly one '<name>/data.pkl' in the archive, found {pkls[:5]}; "
                f"this is not a torch.save file")
        self.pkl_name = pkls[0]
        self.prefix = pkls[0][: -len("data.pkl")]
        self.storages: dict[str, StorageRef] = {}
        self.storage_bytes = 0

    def read(self, name: str, size: int | None = None, limit: int | None = None) -> np.ndarray:
        """The bytes of entry `name` (uncompressed, CRC-checked) as a fresh uint8 array."""
        info = self.infos[name]
        if info.flag_bits & 0x1:
            raise CorruptCheckpointError(f"entry '{name}' is encrypted")
        if info.compress_type != zipfile.ZIP_STORED:
            raise UnsafeCheckpointError(
                f"entry '{name}' is compressed (zip method {info.compress_type}); torch.save "
                "stores every entry uncompressed, so the file was re-packed or crafted (a "
                f"compressed entry can expand to far more memory than the file's size)")
        if info.compress_size != info.file_size or (size is not None and info.file_size != size):
            raise CorruptCheckpointError(
                f"entry '{name}' holds {info.file_size} bytes (stored as {info.compress_size}), "
                f"but {size if size is not None else info.file_size} are declared: the file is "
                f"truncated or tampered with")
        if limit is not None and info.file_size > limit:
            raise CorruptCheckpointError(
                f"entry '{name}' holds {info.file_size} bytes, more than the {limit} a torch "
                f"checkpoint needs there")
        start = self._data_start(info)
        if start + info.file_size > self.file_size:
            raise CorruptCheckpointError(
                f"entry '{name}' runs past the end of the file: the file is truncated "
                f"(an incomplete download?)")
        buf = np.empty(info.file_size, np.uint8)
        self.f.seek(start)
        if self.f.readinto(memoryview(buf)) != info.file_size:
            raise CorruptCheckpointError(f"entry '{name}' is truncated")
        if zlib.crc32(buf) != info.CRC:
            raise CorruptCheckpointError(
                f"entry '{name}' fails its CRC check: the file is damaged (an incomplete "
                f"download or a flipped byte)")
        return buf

    def _data_start(self, info: zipfile.ZipInfo) -> int:
        header = b""
        if 0 <= info.header_offset <= self.file_size - 30:
            self.f.seek(info.header_offset)
            header = self.f.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise CorruptCheckpointError(
                f"entry '{info.filename}' has no local header where the directory says; "
                f"the file is truncated or tampered with")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        raw_name = self.f.read(name_len)
        if raw_name.decode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace") \
                != info.orig_filename:
            raise CorruptCheckpointError(
                f"entry '{info.filename}' points at the data of another entry (overlapping "
                f"entries: the file was crafted)")
        return info.header_offset + 30 + name_len + extra_len

    def byteorder(self) -> str:
        name = self.prefix + "byteorder"
        if name not in self.infos:
            return "little"
        raw = self.read(name, limit=_SMALL_ENTRY_BYTES).tobytes()
        order = raw.decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise CorruptCheckpointError(f"unknown byteorder {raw[:20]!r}")
        return order

    def persistent_load(self, pid: Any) -> StorageRef:
        """Resolve a pickle's storage id to a StorageRef; checks its entry, reads nothing."""
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"
                and type(pid[1]) is StorageType and type(pid[2]) is str
                and type(pid[4]) is int and pid[4] >= 0):
            raise CorruptCheckpointError(
                f"unexpected persistent id: {describe(pid)}, not a torch storage's "
                f"('storage', type, key, location, numel)")
        _, storage_type, key, _location, numel = pid
        known = self.storages.get(key)
        if known is not None:
            if (known.dtype, known.numel) != (storage_type.dtype, numel):
                raise CorruptCheckpointError(
                    f"storage '{key}' is declared twice with different types or sizes; "
                    f"the file was tampered with")
            return known
        name = f"{self.prefix}data/{key}"
        info = self.infos.get(name)
        if info is None:
            raise CorruptCheckpointError(
                f"storage {name!r:.200} is missing from the archive")
        nbytes = numel * storage_type.dtype.itemsize
        if info.file_size != nbytes:
            raise CorruptCheckpointError(
                f"storage '{name}' holds {info.file_size} bytes, but the pickle declares "
                f"{numel} x {storage_type.name} = {nbytes} bytes: the file is truncated or "
                f"tampered with")
        self.storage_bytes += nbytes
        if self.storage_bytes > self.file_size:
            raise CorruptCheckpointError(
                f"the storages declared so far total {self.storage_bytes} bytes, more than the "
                f"whole file ({self.file_size} bytes): entries overlap or lie about their "
                f"sizes; the file was crafted")
        ref = StorageRef(key, storage_type.dtype, numel)
        self.storages[key] = ref
        return ref


def _as_tensor_refs(obj: Any) -> dict[str, TensorRef]:
    if type(obj) is not dict:
        raise CorruptCheckpointError(
            f"holds {describe(obj)}, not a state dict of tensors; pass a plain model "
            "state dict (e.g. the released vae_ch160v4096z32.pth / var_d16.pth)")
    for key, value in obj.items():
        if type(value) is not TensorRef:
            raise CorruptCheckpointError(
                f"entry {key!r:.200} is {describe(value)}, not a tensor; pass a plain "
                "model state dict (e.g. the released vae_ch160v4096z32.pth / var_d16.pth)")
    return obj


def _check_output_size(tensors: list[TensorRef], file_size: int) -> None:
    total = sum(t.size * t.storage.dtype.itemsize for t in tensors)
    limit = 2 * file_size + _OUTPUT_SLACK_BYTES
    if total > limit:
        raise CorruptCheckpointError(
            f"its tensors would take {total:.3g} bytes, far more than the file's {file_size} "
            "bytes: their shapes repeat storage elements (stride 0 or overlapping views) beyond "
            f"what a state dict does; the file was crafted")


def _storage_array(raw: np.ndarray, ref: StorageRef, byteorder: str) -> np.ndarray:
    if ref.dtype == np.bool_:
        return raw != 0
    flat = raw.view(ref.dtype.newbyteorder("<" if byteorder == "little" else ">"))
    return flat if flat.dtype.isnative else flat.astype(ref.dtype)


def _is_contiguous(t: TensorRef) -> bool:
    expect = 1
    for n, s in zip(reversed(t.shape), reversed(t.strides)):
        if n != 1 and s != expect:
            return False
        expect *= n
    return True


def _materialise(t: TensorRef, flat: np.ndarray, sole_user: bool) -> np.ndarray:
    """A contiguous array of `t`; `flat` itself when `t` is all of it and nothing else uses it."""
    n = t.size
    if n == 0:
        return np.zeros(t.shape, flat.dtype)
    if _is_contiguous(t):
        view = flat[t.offset:t.offset + n].reshape(t.shape)
        return view if sole_user and n == flat.size else view.copy()
    view = np.lib.stride_tricks.as_strided(  # bounds checked in elements by _rebuild_tensor_v2
        flat[t.offset:], shape=t.shape, writeable=False,
        strides=tuple(s * flat.itemsize if n > 1 else 0 for n, s in zip(t.shape, t.strides)))
    return view.copy(order="C")


def _read_state_dict(f: BinaryIO, progress: Callable[[int], None] | None) -> dict[str, np.ndarray]:
    archive = _Archive(f)
    byteorder = archive.byteorder()
    pickle_bytes = archive.read(archive.pkl_name, limit=MAX_PICKLE_BYTES).tobytes()
    refs = _as_tensor_refs(run_pickle(pickle_bytes, archive.persistent_load))
    unique = list({id(t): t for t in refs.values()}.values())
    _check_output_size(unique, archive.file_size)
    users = collections.Counter(t.storage.key for t in unique)

    def read_storage(key: str, ref: StorageRef) -> np.ndarray:
        size = ref.numel * ref.dtype.itemsize
        flat = _storage_array(archive.read(f"{archive.prefix}data/{key}", size), ref, byteorder)
        if progress is not None:
            progress(size)
        return flat

    flats = {key: read_storage(key, ref) for key, ref in archive.storages.items() if key in users}
    arrays = {id(t): _materialise(t, flats[t.storage.key], users[t.storage.key] == 1)
              for t in unique}
    del flats
    return {str(k): _upcast(arrays[id(t)]) for k, t in refs.items()}


def _upcast(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) if a.dtype == ml_dtypes.bfloat16 else a


def load_torch_state_dict(source: str | os.PathLike | BinaryIO,
                          progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Load a state dict saved with `torch.save` (zip format) as numpy arrays; runs no code.

    `progress`, if given, is called with the byte count of each tensor storage as it is read.

    `source` is a path or a seekable binary file. bfloat16 tensors come back as float32, every
    array contiguous and writable. Raises FileNotFoundError for a missing path and a
    CheckpointFormatError (a ValueError) for anything else wrong: UnsafeCheckpointError for a
    pickle asking for a global or operation outside the allow-list, CorruptCheckpointError for
    a truncated, damaged, tampered or non-zip file.
    """
    is_file = hasattr(source, "read")
    label = "<file object>" if is_file else os.fspath(source)
    if not is_file and not os.path.isfile(label):
        raise FileNotFoundError(f"no checkpoint file at {label!r}")
    try:
        if is_file:
            return _read_state_dict(source, progress)
        with open(label, "rb") as f:
            return _read_state_dict(f, progress)
    except CheckpointFormatError as e:
        raise type(e)(f"{label}: refusing to load: {e}. {e.advice}") from None
