"""Output paths checked before any work, so a bad --out fails in a second, not after sampling."""
from __future__ import annotations

import os

from PIL import Image


def check_output_file(path: str, flag: str, *, image: bool = False) -> None:
    """`path` can be (over)written as a file: not a folder, its folder exists and is writable;
    with `image`, its extension is one PIL writes (.png, .jpg...)."""
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{flag} is empty; give a file name, e.g. {flag} out.png.")
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a folder; give a file name, e.g. "
                         f"{os.path.join(path, 'out.png')}.")
    _check_folder(os.path.dirname(os.path.abspath(path)), flag, path)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} exists and is not writable; pick another file.")
    if image:
        ext = os.path.splitext(path)[1].lower()
        fmt = Image.registered_extensions().get(ext)
        if fmt is None or fmt not in Image.SAVE:
            raise ValueError(f"{flag} {path}: {ext or 'no extension'} is not an image format "
                             "that can be written; end the name with .png (or .jpg).")


def check_output_dir(path: str, flag: str, *, empty: bool = False) -> None:
    """`path` is a writable folder, or can be created in a writable one; with `empty`, it must
    not hold anything yet."""
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{flag} is empty; give a folder.")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(f"{flag} {path} is a file, not a folder; pick a folder.")
        if empty and os.listdir(path):
            raise FileExistsError(f"{flag} {path} is not empty; pick a new folder or delete it "
                                  "first.")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {path} is not writable; pick a folder you can write to.")
        return
    _check_folder(os.path.dirname(os.path.abspath(path)), flag, path)


def _check_folder(folder: str, flag: str, path: str) -> None:
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {path}: the folder {folder} does not exist; create it first or "
                         "pick another path.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: the folder {folder} is not writable; pick another "
                         "path.")
