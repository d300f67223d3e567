"""Read PyTorch `.pth` state dicts (torch's zip format) into numpy, without PyTorch or pickled code.

The pickle inside a `.pth` names Python callables ("globals") that rebuild tensors. We never
import them: an allow-list maps each accepted global to a numpy function of our own, and any
other global is refused before anything runs.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np


class UnsafeCheckpointError(ValueError):
    """The checkpoint's pickle asks for a global outside the allow-list."""


class CorruptCheckpointError(ValueError):
    """The file is not a readable PyTorch zip checkpoint."""


_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stand-in for `torch.<X>Storage`: only carries the element dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """numpy version of torch._utils._rebuild_tensor_v2: a strided view of a flat storage."""
    del requires_grad, backward_hooks, metadata
    if not isinstance(storage, np.ndarray):
        raise CorruptCheckpointError(f"tensor storage is {type(storage).__name__}, not a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size + stride) or storage_offset < 0:
        raise CorruptCheckpointError(f"invalid tensor geometry size={size} stride={stride}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = int(storage_offset) + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= storage.size:
        raise CorruptCheckpointError(
            f"tensor of size {size} (offset {storage_offset}, stride {stride}) reads past the end "
            f"of its storage of {storage.size} elements: the file is truncated or tampered with")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[int(storage_offset):], shape=size, strides=tuple(st * item for st in stride),
        writeable=False)
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    del requires_grad, backward_hooks, state
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and reads storages from the zip."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str,
                 path: str):
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._byteorder, self._path = archive, prefix, byteorder, path
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._path}: refusing to load: its pickle asks for the global "
                f"'{module}.{name}', which is not a tensor-rebuild or container global. "
                "A weights file never needs it; the file may be malicious. Nothing was executed."
            ) from None

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise CorruptCheckpointError(f"{self._path}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        key = str(key)
        if key not in self._storages:
            name = f"{self._prefix}data/{key}"
            try:
                raw = self._archive.read(name)
            except KeyError:
                raise CorruptCheckpointError(
                    f"{self._path}: storage '{name}' is missing from the archive") from None
            dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
            if len(raw) < int(numel) * dtype.itemsize:
                raise CorruptCheckpointError(
                    f"{self._path}: storage '{name}' has {len(raw)} bytes, expected "
                    f"{int(numel) * dtype.itemsize}: the file is truncated")
            arr = np.frombuffer(raw, dtype=dtype, count=int(numel))
            self._storages[key] = arr.astype(storage_type.dtype, copy=False)
        return self._storages[key]


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a PyTorch state dict saved with `torch.save` (zip format) as numpy arrays.

    bfloat16 tensors are returned as float32. Raises UnsafeCheckpointError for a pickle that
    names any global other than tensor-rebuild and container ones, and CorruptCheckpointError
    for a truncated, tampered or non-zip file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}")
    if not zipfile.is_zipfile(path):
        raise CorruptCheckpointError(
            f"{path}: not a PyTorch zip checkpoint (the file is truncated, corrupt, or in the "
            "legacy pre-1.6 format; re-save it with a recent torch.save)")
    try:
        with zipfile.ZipFile(path) as archive:
            pkl_names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if len(pkl_names) != 1:
                raise CorruptCheckpointError(
                    f"{path}: expected exactly one '<name>/data.pkl' in the archive, "
                    f"found {pkl_names}")
            prefix = pkl_names[0][: -len("data.pkl")]
            names = set(archive.namelist())
            byteorder = "little"
            if prefix + "byteorder" in names:
                byteorder = archive.read(prefix + "byteorder").decode().strip()
            if byteorder not in ("little", "big"):
                raise CorruptCheckpointError(f"{path}: unknown byteorder {byteorder!r}")
            unpickler = _SafeUnpickler(archive.read(pkl_names[0]), archive, prefix, byteorder,
                                       path)
            obj = unpickler.load()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, pickle.UnpicklingError,
            OSError) as e:
        raise CorruptCheckpointError(f"{path}: cannot read checkpoint ({e})") from e
    return _as_state_dict(obj, path)


def _as_state_dict(obj: Any, path: str) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise CorruptCheckpointError(
            f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, np.ndarray):
            raise CorruptCheckpointError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; pass a plain "
                "model state dict (e.g. the released vae_ch160v4096z32.pth / var_d16.pth)")
        out[str(key)] = value.astype(np.float32) if value.dtype == ml_dtypes.bfloat16 else value
    return out
