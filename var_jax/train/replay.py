"""Replay check: re-run N steps from checkpoint k of a run and compare with checkpoint k+N.

Catches code changed under a running project: the same code, config, data position and keys
give the same bits on CPU (and agree within a stated tolerance on accelerators).
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import types
import typing

import jax
import numpy as np

from var_jax import checkpoint as ckpt_lib
from var_jax import manifest as manifest_lib
from var_jax import sharding
from var_jax.train.input import default_streams
from var_jax.train.loop import compile_train_step, create_state, state_initializer

# Relative tolerance off CPU: max |replayed - stored| <= ACCEL_RTOL * max(1, max |stored|).
ACCEL_RTOL = 1e-4

# Trainers the CLI can rebuild from a run's recorded config: config class -> task class.
BUILTIN_TASKS = {
    "var_jax.train.var_task.VARTrainConfig": "var_jax.train.var_task.VARTask",
    "var_jax.train.tokenizer_config.TokenizerTrainConfig":
        "var_jax.train.tokenizer_task.TokenizerTask",
}


@dataclasses.dataclass
class ReplayReport:
    start: int
    end: int
    tolerance: float                 # relative; 0.0 = bitwise
    max_abs_diff: dict[str, float]   # per array
    mismatched: list[str]            # arrays beyond the tolerance
    code_difference: list[str]       # vs the code that wrote checkpoint `start` ([] = same)

    @property
    def ok(self) -> bool:
        return not self.mismatched

    def lines(self) -> list[str]:
        verdict = "MATCH" if self.ok else "MISMATCH"
        tol = "bitwise" if self.tolerance == 0 else f"relative tolerance {self.tolerance:g}"
        out = [f"replay {verdict}: steps {self.start} -> {self.end} ({tol}); "
               f"{len(self.mismatched)} of {len(self.max_abs_diff)} arrays differ"]
        for name in self.mismatched[:10]:
            out.append(f"  {name}: max |replayed - stored| = {self.max_abs_diff[name]:.3g}")
        out += (["code: the same as the code that wrote the checkpoint"]
                if not self.code_difference else ["code differs:"] + self.code_difference)
        return out


def pick_start(steps: list[int], n: int) -> int:
    """The latest kept step k whose k + n is kept too."""
    starts = [k for k in steps if k + n in steps]
    if not starts:
        gaps = sorted({b - a for i, a in enumerate(steps) for b in steps[i + 1:]})
        raise ValueError(f"--replay {n}: no two kept checkpoints are {n} steps apart (kept "
                         f"steps {steps}); use one of {gaps or 'none: keep at least two'}.")
    return max(starts)


def replay(run_dir: str, n: int, *, config=None, task=None, streams=None,
           tolerance: float | None = None) -> ReplayReport:
    """Re-run `n` steps from a kept checkpoint k of `run_dir` and compare with checkpoint k+n.

    `config`/`task`/`streams` default to the run's recorded config and the built-in trainer for
    it with the default input; pass them for custom tasks. `tolerance` defaults to 0 (bitwise)
    on CPU and ACCEL_RTOL elsewhere.
    """
    ckpt = ckpt_lib.Checkpointer(os.path.join(run_dir, "checkpoints"), read_only=True)
    try:
        start = pick_start(ckpt.all_steps(), n)
        recorded = ckpt.manifest(start)
        if config is None:
            config = config_from_manifest(recorded)
        if task is None:
            task = _builtin_task(recorded.get("config_class"))(config)
        streams = streams or default_streams
        if tolerance is None:
            tolerance = 0.0 if jax.default_backend() == "cpu" else ACCEL_RTOL
        return _replay(ckpt, start, n, config, task, streams, tolerance, recorded)
    finally:
        ckpt.close()


def _replay(ckpt, start, n, config, task, streams, tolerance, recorded) -> ReplayReport:
    mesh = sharding.make_mesh(config.mesh)
    key = jax.random.split(jax.random.key(config.loop.seed))[0]
    with sharding.activate(mesh):
        state, shardings, data_state, _ = create_state(task, config.loop, mesh, key, ckpt,
                                                       step=start)
        stream = streams(config, "train")
        if data_state is not None:
            stream.set_state(data_state)
        update = compile_train_step(task, shardings, mesh)
        for _ in range(n):
            state, _ = update(state, sharding.global_batch(next(stream), mesh))
        getattr(stream, "close", lambda: None)()
        _, abstract, _ = state_initializer(task, config.loop, mesh)
        stored, _, _ = ckpt.restore(abstract.checkpointed(), start + n)
    got = manifest_lib.flatten(jax.device_get(state.checkpointed()))
    want = manifest_lib.flatten(jax.device_get(stored))
    diffs, bad = {}, []
    for name in sorted(want):
        a, b = np.asarray(got[name]), np.asarray(want[name])
        if a.dtype.kind in "fc":
            diff = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
            limit = tolerance * max(1.0, float(np.max(np.abs(b))) if b.size else 0.0)
            same = diff <= limit if tolerance else np.array_equal(a, b)
        else:
            same = np.array_equal(a, b)
            diff = 0.0 if same else float(np.max(np.abs(a.astype(np.int64) - b)))
        diffs[name] = diff
        if not same:
            bad.append(name)
    return ReplayReport(start, start + n, tolerance, diffs, bad,
                        manifest_lib.code_difference(recorded.get("code")))


def config_from_manifest(manifest: dict):
    """The run's config object, rebuilt from the manifest's JSON (built-in trainers only)."""
    name = manifest.get("config_class")
    if name not in BUILTIN_TASKS:
        raise ValueError(f"the run's config class {name!r} is not a built-in trainer "
                         f"({sorted(BUILTIN_TASKS)}); replay it from Python with "
                         "var_jax.train.replay.replay(run, n, config=..., task=..., streams=...).")
    return from_dict(_import(name), manifest["config"])


def _builtin_task(config_class: str | None):
    if config_class not in BUILTIN_TASKS:
        raise ValueError(f"no built-in trainer for config class {config_class!r}; pass task=.")
    return _import(BUILTIN_TASKS[config_class])


def _import(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def from_dict(cls, data):
    """Inverse of dataclasses.asdict for config dataclasses (nested dataclasses, tuples)."""
    return _convert(cls, data)


def _convert(hint, value):
    if value is None:
        return None
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        hints = typing.get_type_hints(hint)
        return hint(**{f.name: _convert(hints[f.name], value[f.name])
                       for f in dataclasses.fields(hint) if f.init and f.name in value})
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in (a for a in args if a is not type(None)):
            if dataclasses.is_dataclass(option) and isinstance(value, dict):
                return _convert(option, value)
            if typing.get_origin(option) is tuple and isinstance(value, list):
                return _convert(option, value)
        return value
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in value)
        if args:
            return tuple(_convert(a, v) for a, v in zip(args, value))
        return tuple(value)
    return value
