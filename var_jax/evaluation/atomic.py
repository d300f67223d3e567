"""Atomic writes: a temp file in the target's folder, fsync, os.replace."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile

import numpy as np


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb"):
    """Open a temp file next to `path`; on success fsync it and rename it over `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_savez(path: str | os.PathLike, **arrays) -> None:
    with atomic_file(path) as f:
        np.savez(f, **arrays)


def atomic_json(path: str | os.PathLike, obj) -> None:
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=True)
