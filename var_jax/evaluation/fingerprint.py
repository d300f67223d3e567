"""sha256 fingerprints of weights: a file, a folder of files, or a dict of arrays."""
from __future__ import annotations

import hashlib
import os

import numpy as np

_BLOCK = 1 << 20


def _update_file(h, path: str) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)


def path_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes; for a folder, of its files' relative paths and bytes, sorted."""
    path = os.fspath(path)
    h = hashlib.sha256()
    if os.path.isfile(path):
        _update_file(h, path)
        return h.hexdigest()
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no weights at {path!r}")
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            h.update(os.path.relpath(full, path).encode() + b"\0")
            _update_file(h, full)
    return h.hexdigest()


def arrays_fingerprint(sd: dict) -> str:
    """sha256 over the sorted keys, dtypes, shapes and bytes of a dict of arrays."""
    h = hashlib.sha256()
    for k in sorted(sd):
        a = np.ascontiguousarray(sd[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()
