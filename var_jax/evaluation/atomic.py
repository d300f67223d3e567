"""Atomic .npz writes on top of var_jax.atomic, including one streamed to disk (samples.npz is
~10 GB at 50,000 x 256 px, too big to build in memory for `write_bytes`)."""
from __future__ import annotations

import contextlib
import io
import os
import tempfile

import numpy as np

from var_jax.atomic import fsync_dir, write_bytes


def write_npz(path: str | os.PathLike, **arrays) -> None:
    """np.savez(path, **arrays), atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_stream(path: str | os.PathLike):
    """A binary file to write in pieces; it replaces `path` (fsynced) only when the block ends
    without an exception, as var_jax.atomic.write_bytes does for one piece."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(folder)
