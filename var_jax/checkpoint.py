"""Preemption-safe training checkpoints: one small wrapper over Orbax's CheckpointManager."""
from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import subprocess
from typing import Any

import jax
from etils import epath

log = logging.getLogger(__name__)

STATE, DATA, META = "state", "data", "meta"


class Checkpointer:
    """Numbered checkpoints under `directory`, each with three items.

    - "state": a pytree of arrays (Orbax StandardSave; sharded arrays are written by every host),
    - "data": the input iterator's JSON state (`stream.get_state()`),
    - "meta": JSON (config, provenance, metrics...).

    Saves are asynchronous (training continues while files are written) and atomic: Orbax writes
    into `<step>.orbax-checkpoint-tmp-*` and renames it when every item is complete, so a crash
    mid-save leaves no directory that looks like a checkpoint; leftovers are deleted on start.
    Only the last `keep` checkpoints are kept.
    """

    def __init__(self, directory: str | os.PathLike, *, save_every: int, keep: int = 3,
                 async_save: bool = True):
        import orbax.checkpoint as ocp

        if save_every < 1 or keep < 1:
            raise ValueError(f"save_every={save_every} and keep={keep} must both be >= 1.")
        self.directory = _absolute(directory)
        self.save_every = save_every
        self._ocp = ocp
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=(STATE, DATA, META))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        """Every `save_every` steps, never twice for the same step."""
        latest = self.latest_step()
        return step % self.save_every == 0 and (latest is None or step > latest)

    def save(self, step: int, state: Any, data_state: dict | None = None,
             meta: dict | None = None) -> None:
        """Start an asynchronous save of step `step` (returns once arrays are copied off device)."""
        ocp = self._ocp
        self._manager.save(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            DATA: ocp.args.JsonSave(data_state or {}),
            META: ocp.args.JsonSave(meta or {}),
        }), force=True)

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict, dict]:
        """(state, data_state, meta) of `step` (default: the latest).

        `target` is a pytree of `jax.ShapeDtypeStruct`s (or arrays) with the shardings wanted
        now: the arrays are read straight into them, so a checkpoint written on one mesh restores
        onto another.
        """
        ocp = self._ocp
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}.")
        target = jax.tree.map(_abstract, target)
        out = self._manager.restore(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardRestore(target),
            DATA: ocp.args.JsonRestore(),
            META: ocp.args.JsonRestore(),
        }))
        return out[STATE], dict(out[DATA] or {}), dict(out[META] or {})

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _absolute(path) -> epath.Path:
    """Local paths made absolute (Orbax needs that); gs:// and other URLs kept as they are."""
    path = os.fspath(path)
    return epath.Path(path if "://" in path else os.path.abspath(path))


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance(**extra) -> dict:
    """Where a run came from: versions, git commit, devices, host, time, plus `extra`
    (e.g. dataset=..., seed=...)."""
    import flax
    import optax
    import orbax.checkpoint as ocp

    from var_jax import __version__

    devices = jax.devices()
    return {
        "var_jax": __version__, "git_commit": _git_commit(), "jax": jax.__version__,
        "flax": flax.__version__, "optax": optax.__version__,
        "orbax_checkpoint": getattr(ocp, "__version__", None),
        "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
        "device_count": len(devices), "process_count": jax.process_count(),
        "host": socket.gethostname(),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def write_run_info(workdir: str | os.PathLike, config: dict, info: dict) -> None:
    """Write `config.json` and `provenance.json` into `workdir` (process 0 only).

    A resumed run whose config differs from the stored one is logged (keys named); the new
    config is kept and the old one saved as `config.previous.json`.
    """
    if jax.process_index() != 0:
        return
    workdir = _absolute(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.json"
    new = json.loads(json.dumps(config, default=str))
    if path.exists():
        old = json.loads(path.read_text())
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            log.warning("config differs from the stored %s in %s; keeping the old one as "
                        "config.previous.json", path, changed)
            (workdir / "config.previous.json").write_text(path.read_text())
    path.write_text(json.dumps(new, indent=1))
    (workdir / "provenance.json").write_text(json.dumps(info, indent=1, default=str))
