"""The one way var_jax writes a file: temp file in the same folder + fsync + os.replace + dir fsync.

A crash or a full disk leaves either the old file or the new one, never a truncated one.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from typing import Any

import numpy as np
from etils import epath
from PIL import Image


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike):
    """A binary file to write, in one piece or many; it replaces `path` (fsynced, then the
    folder fsynced) only when the block ends without an exception, else it is deleted. gs:// and
    other URLs, whose object writes are atomic already, are buffered and written through
    etils.epath."""
    path = os.fspath(path)
    if "://" in path:
        buf = io.BytesIO()
        yield buf
        epath.Path(path).write_bytes(buf.getvalue())
        return
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


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` by `data` atomically."""
    with open_atomic(path) as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, **dump_kwargs) -> None:
    """`obj` as indented JSON, atomically (`dump_kwargs` go to json.dumps, e.g. default=str)."""
    write_text(path, json.dumps(obj, indent=1, **dump_kwargs) + "\n")


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new entry in `folder` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_npz(path: str | os.PathLike, **arrays) -> None:
    """np.savez(path, **arrays), atomically."""
    with open_atomic(path) as f:
        np.savez(f, **arrays)


def write_image(path: str | os.PathLike, pixels) -> None:
    """uint8 pixels (H, W[, C]) as an image file, its format from the extension (.png, .jpg...)."""
    fmt = Image.registered_extensions().get(os.path.splitext(os.fspath(path))[1].lower(), "PNG")
    with open_atomic(path) as f:
        Image.fromarray(np.asarray(pixels)).save(f, format=fmt)
