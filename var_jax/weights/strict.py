"""Strict state-dict -> Flax params conversion: every key accounted for, every shape checked."""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Optional

import jax
from flax.core import meta
import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]
KeyMap = Callable[[str], Optional[tuple[tuple[str, ...], Transform]]]


def IDENTITY(a: np.ndarray) -> np.ndarray:
    return a


def LINEAR(a: np.ndarray) -> np.ndarray:
    """torch Linear weight (out, in) -> flax Dense kernel (in, out)."""
    return a.T


def CONV(a: np.ndarray) -> np.ndarray:
    """torch Conv2d weight (O, I, kh, kw) -> flax Conv kernel (kh, kw, I, O)."""
    return a.transpose(2, 3, 1, 0)


def _flat_expected(expected: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(expected)[0]
    return {tuple(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
            for path, leaf in leaves}


def _nest(flat: dict[tuple[str, ...], np.ndarray]) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def params_from_state_dict(sd: dict[str, np.ndarray], expected: Any, key_map: KeyMap, *,
                           ignore: Iterable[str] = (), model_name: str = "model") -> dict:
    """Convert a torch state dict to a nested dict of float32 arrays shaped like `expected`.

    `key_map(key)` returns (flax path, transform) or None for a key the model does not have;
    keys matching an `ignore` regex (buffers) are skipped. Raises ValueError naming every
    unexpected key, every missing parameter and every shape mismatch (with both shapes), or
    else every parameter holding NaN/Inf.
    """
    ignore_res = [re.compile(p) for p in ignore]
    want = _flat_expected(meta.unbox(expected))
    got: dict[tuple[str, ...], np.ndarray] = {}
    source: dict[tuple[str, ...], str] = {}
    unexpected, mismatched, mismatched_paths = [], [], set()
    for key, value in sd.items():
        if any(r.fullmatch(key) for r in ignore_res):
            continue
        mapped = key_map(key)
        if mapped is None or mapped[0] not in want:
            unexpected.append(f"{key} {tuple(value.shape)}")
            continue
        path, transform = mapped
        if path in got:
            raise ValueError(f"{model_name}: keys {source[path]!r} and {key!r} both map to "
                             f"parameter {'/'.join(path)}")
        arr = np.ascontiguousarray(transform(np.asarray(value)), dtype=np.float32)
        if arr.shape != want[path]:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} -> {arr.shape} after "
                              f"layout change, but {'/'.join(path)} expects {want[path]}")
            mismatched_paths.add(path)
            continue
        got[path], source[path] = arr, key
    missing = [f"{'/'.join(p)} {s}" for p, s in want.items()
               if p not in got and p not in mismatched_paths]
    problems = []
    if mismatched:
        problems.append("shape mismatches:\n  " + "\n  ".join(mismatched))
    if unexpected:
        problems.append("unexpected keys (not in this config's model):\n  "
                        + "\n  ".join(unexpected))
    if missing:
        problems.append("missing parameters (no checkpoint key provides them):\n  "
                        + "\n  ".join(missing))
    if problems:
        raise ValueError(
            f"{model_name}: the state dict does not fit the config. " + "\n".join(problems)
            + "\nCheck that the config (preset, resolution, depth) matches the checkpoint.")
    non_finite = [f"{source[p]} ({non_finite_summary(a)})" for p, a in got.items()
                  if not np.isfinite(a).all()]
    if non_finite:
        raise ValueError(
            f"{model_name}: weights hold NaN/Inf values:\n  " + "\n  ".join(non_finite)
            + "\nThe file is damaged, or the training that wrote it diverged; download it "
            "again or use an earlier checkpoint.")
    return _nest(got)


def non_finite_summary(a: np.ndarray) -> str:
    """'3 NaN, 1 Inf of 1000 values' for a float array holding non-finite values."""
    nan = int(np.isnan(a).sum())
    return f"{nan} NaN, {int(a.size - nan - np.isfinite(a).sum())} Inf of {a.size} values"
