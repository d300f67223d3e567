"""One trainer per work dir: an exclusive flock on WORKDIR/.lock plus a JSON holder record.

The kernel drops a flock when its process dies, so a killed trainer never blocks the next one;
the holder record it leaves behind (lock.json) is reported as stale when the lock is taken.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket

from var_jax import atomic

log = logging.getLogger(__name__)

LOCK_FILE, HOLDER_FILE = ".lock", "lock.json"


class WorkdirLockedError(FileExistsError):
    """Another live process holds the work dir."""


class WorkdirLock:
    """`with WorkdirLock(workdir):` holds the work dir exclusively (local paths; a gs:// work
    dir cannot be flocked and is used unlocked, with a warning)."""

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = os.fspath(workdir)
        self._fd: int | None = None

    def __enter__(self) -> "WorkdirLock":
        if "://" in self.workdir:
            log.warning("%s is not a local path: it cannot be locked; make sure no other "
                        "trainer uses it", self.workdir)
            return self
        try:
            os.makedirs(self.workdir, exist_ok=True)
            fd = os.open(os.path.join(self.workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ValueError(f"--workdir {self.workdir} cannot be written ({e.strerror}); pick a "
                             "directory you can write to.") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WorkdirLockedError(
                f"--workdir {self.workdir} is in use by {describe(read_holder(self.workdir))}; "
                "wait for it to finish, stop it, or pick another --workdir.") from None
        stale = read_holder(self.workdir)
        if stale is not None:
            log.warning("%s: taking over a stale lock of %s (that process is gone)",
                        self.workdir, describe(stale))
        self._fd = fd
        try:
            atomic.write_json(os.path.join(self.workdir, HOLDER_FILE), holder())
        except OSError as e:
            self.__exit__()
            raise ValueError(f"--workdir {self.workdir} cannot be written ({e.strerror}); pick a "
                             "directory you can write to.") from e
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(os.path.join(self.workdir, HOLDER_FILE))
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "start": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def read_holder(workdir: str) -> dict | None:
    try:
        with open(os.path.join(workdir, HOLDER_FILE)) as f:
            record = json.load(f)
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def describe(record: dict | None) -> str:
    if not record:
        return "another process (no holder record)"
    return (f"pid {record.get('pid')} on host {record.get('host')} (started "
            f"{record.get('start')})")
