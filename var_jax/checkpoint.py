"""Preemption-safe training checkpoints: one small wrapper over Orbax's CheckpointManager."""
from __future__ import annotations

import datetime
import json
import logging
import os
import socket
from typing import Any

import flax
import jax
import optax
import orbax.checkpoint as ocp
from etils import epath

from var_jax import __version__, atomic
from var_jax import manifest as manifest_lib

log = logging.getLogger(__name__)

STATE, DATA, META, MANIFEST = "state", "data", "meta", "manifest"


class DamagedCheckpointError(ValueError):
    """A checkpoint step whose files are missing or unreadable."""


class Checkpointer:
    """Numbered checkpoints under `directory`, each with four items.

    - "state": a pytree of arrays (Orbax StandardSave; sharded arrays are written by every host),
    - "data": the input iterator's JSON state (`stream.get_state()`),
    - "meta": JSON (config, provenance, metrics...),
    - "manifest": sha256 of every array and of the data state, the config, the code fingerprint
      and the previous checkpoint's manifest hash (see var_jax.manifest): a hash chain.

    Saves are asynchronous (training continues while files are written) and atomic: Orbax writes
    every item into `<step>.orbax-checkpoint-tmp-*` and renames it when all are complete, so the
    manifest is there exactly when the step is; a crash mid-save leaves no directory that looks
    like a checkpoint, and leftovers are deleted on start (not when `read_only`).
    Restores verify the arrays against the manifest. Only the last `keep` checkpoints are kept.
    """

    def __init__(self, directory: str | os.PathLike, *, save_every: int = 1, keep: int = 3,
                 async_save: bool = True, read_only: bool = False):
        if save_every < 1 or keep < 1:
            raise ValueError(f"save_every={save_every} and keep={keep} must both be >= 1.")
        self.directory = _absolute(directory)
        self.save_every = save_every
        self.read_only = read_only
        self._ocp = ocp
        self._parent: str | None = None          # manifest hash the next save continues
        self._overrides: list[dict] = []         # recorded in the next manifest
        self.restored_manifest: dict | None = None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else keep, enable_async_checkpointing=async_save,
            save_interval_steps=0 if read_only else 1,
            cleanup_tmp_directories=not read_only, create=not read_only, read_only=read_only)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=(STATE, DATA, META, MANIFEST))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        """Every `save_every` steps, never twice for the same step."""
        latest = self.latest_step()
        return step % self.save_every == 0 and (latest is None or step > latest)

    def record_override(self, what: dict) -> None:
        """Note something let through by an explicit flag; the next manifest records it."""
        self._overrides.append(what)

    def save(self, step: int, state: Any, data_state: dict | None = None,
             meta: dict | None = None) -> None:
        """Start an asynchronous save of step `step` (returns once arrays are copied off device)."""
        ocp = self._ocp
        data_state = data_state or {}
        meta = meta or {}
        manifest = manifest_lib.build(
            "checkpoint", manifest_lib.array_entries(state), meta.get("config"),
            parent=self._parent, overrides=self._overrides, step=int(step),
            data_sha256=manifest_lib.json_digest(data_state), config_class=meta.get("config_class"))
        self._manager.save(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            DATA: ocp.args.JsonSave(data_state),
            META: ocp.args.JsonSave(meta),
            MANIFEST: ocp.args.JsonSave(manifest),
        }), force=True)
        self._parent, self._overrides = manifest_lib.manifest_hash(manifest), []

    def manifest(self, step: int) -> dict:
        """The manifest of `step`; DamagedCheckpointError when it is missing or unreadable."""
        path = self.directory / str(step) / MANIFEST / "metadata"
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DamagedCheckpointError(f"its manifest {path} is missing or unreadable "
                                         f"({type(e).__name__}: {e})") from e
        if not isinstance(manifest, dict) or manifest.get("format") != manifest_lib.FORMAT:
            raise DamagedCheckpointError(f"its manifest {path} is not a var_jax manifest")
        return manifest

    def restore(self, target: Any, step: int | None = None, *,
                allow_tampered: bool = False) -> tuple[Any, dict, dict]:
        """(state, data_state, meta) of `step` (default: the latest intact one).

        `target` is a pytree of `jax.ShapeDtypeStruct`s (or arrays) with the shardings wanted
        now: the arrays are read straight into them, so a checkpoint written on one mesh restores
        onto another (None: as saved, on the default device). The arrays and the data state are checked against the step's manifest:
        a mismatch raises TamperedError naming the array and both hashes (allow_tampered: a
        warning, recorded in the next manifest). With `step` None, a damaged latest step (missing
        or unreadable files) is moved aside as `<step>.damaged` with a warning naming the damage,
        and the previous one is tried.
        """
        if step is not None:
            return self._restore(target, step, allow_tampered)[:3]
        return self.restore_latest(target, allow_tampered=allow_tampered)[1:]

    def restore_latest(self, target: Any, *, allow_tampered: bool = False):
        """(step, state, data_state, meta) of the latest intact checkpoint (see `restore`)."""
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}.")
        for i, step in enumerate(reversed(steps)):
            try:
                state, data, meta = self._restore(target, step, allow_tampered)
                return step, state, data, meta
            except DamagedCheckpointError as e:
                earlier = steps[-i - 2] if i + 1 < len(steps) else None
                log.warning("checkpoint step %d in %s is damaged: %s; %s", step, self.directory,
                            e, f"falling back to step {earlier}" if earlier is not None
                            else "no earlier checkpoint is left")
                self._set_aside(step)
        raise DamagedCheckpointError(f"every checkpoint in {self.directory} is damaged (steps "
                                     f"{steps}, moved aside as <step>.damaged); start a new "
                                     "--workdir or restore the files from a backup.")

    def _restore(self, target, step: int, allow_tampered: bool):
        ocp = self._ocp
        manifest = self.manifest(step)
        where = f"checkpoint step {step} in {self.directory}"
        mismatch = [] if target is None else manifest_lib.compare_shapes(manifest, target, where)
        if mismatch:
            raise ValueError(f"{where} was written for a different model or state: "
                             f"{'; '.join(mismatch[:3])}"
                             f"{f' (and {len(mismatch) - 3} more)' if len(mismatch) > 3 else ''}. "
                             "Resume with the config it was trained with (config.json in the "
                             "work dir), or start a new --workdir.")
        target = None if target is None else jax.tree.map(_abstract, target)
        missing = [f"{STATE}/_METADATA"] if not (self.directory / str(step) / STATE /
                                                 "_METADATA").exists() else []
        if missing:
            raise DamagedCheckpointError(f"{missing[0]} is missing")
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(**{
                STATE: ocp.args.StandardRestore(target),
                DATA: ocp.args.JsonRestore(),
                META: ocp.args.JsonRestore(),
            }))
        except Exception as e:   # Orbax / TensorStore raise many types for unreadable files
            raise DamagedCheckpointError(f"its files do not read back ({type(e).__name__}: "
                                         f"{str(e)[:300]})") from e
        state, data = out[STATE], dict(out[DATA] or {})
        problems = manifest_lib.compare_arrays(manifest, state, where)
        if manifest_lib.json_digest(data) != manifest.get("data_sha256"):
            problems.append(f"{where}: the data state has sha256 {manifest_lib.json_digest(data)}"
                            f", the manifest says {manifest.get('data_sha256')}")
        manifest_lib.enforce(problems, allow_tampered, f"restoring {where}")
        if problems:
            self.record_override({"allow_tampered": problems, "step": int(step)})
        self._parent = manifest_lib.manifest_hash(manifest)
        self.restored_manifest = manifest
        return state, data, dict(out[META] or {})

    def _set_aside(self, step: int) -> None:
        if self.read_only or jax.process_index() != 0:
            return
        src = self.directory / str(step)
        dst = self.directory / f"{step}.damaged"
        n = 1
        while dst.exists():
            dst, n = self.directory / f"{step}.damaged{n}", n + 1
        src.rename(dst)
        self._manager.reload()

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


def provenance(**extra) -> dict:
    """Where a run came from: versions, git commit, devices, host, time, plus `extra`
    (e.g. dataset=..., seed=...)."""
    devices = jax.devices()
    return {
        "var_jax": __version__, "git_commit": manifest_lib.git_commit(), "jax": jax.__version__,
        "flax": flax.__version__, "optax": optax.__version__,
        "orbax_checkpoint": getattr(ocp, "__version__", None),
        "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
        "device_count": len(devices), "process_count": jax.process_count(),
        "host": socket.gethostname(),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def write_run_info(workdir: str | os.PathLike, config: dict, info: dict) -> None:
    """Write `config.json` and `provenance.json` into `workdir` atomically (process 0 only).

    An earlier, different `config.json` is kept as `config.previous.json` (whether a resumed
    run may change its config is decided by the loop: see --allow-config-change).
    """
    if jax.process_index() != 0:
        return
    workdir = _absolute(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.json"
    new = json.loads(json.dumps(config, default=str))
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
            log.warning("%s was unreadable (not JSON); replacing it", path)
        if old is not None and old != new:
            atomic.write_json(workdir / "config.previous.json", old)
    atomic.write_json(path, new)
    atomic.write_json(workdir / "provenance.json", info, default=str)
