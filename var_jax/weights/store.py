"""Converted weights on disk: an Orbax params checkpoint, the model config as JSON, a manifest."""
from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from var_jax import atomic
from var_jax import manifest as manifest_lib
from var_jax.configs import VARConfig, VQVAEConfig, config_from_dict, config_to_dict
from var_jax.weights.strict import non_finite_summary

_CONFIG_FILE = "config.json"
_PARAMS_DIR = "params"
MANIFEST_FILE = "manifest.json"


def save_converted(directory: str | os.PathLike, cfg: VQVAEConfig | VARConfig, params) -> str:
    """Write `params` (Orbax), `cfg` (JSON) and their manifest under `directory`; returns the
    absolute path.

    Everything is written into a temporary sibling folder that is renamed to `directory` once
    complete, so a crash or a full disk never leaves a half-written weights dir. `directory`
    must not exist or be empty. Leaves are written as host numpy arrays, so the weights load on
    any device count.
    """
    directory = os.path.abspath(os.fspath(directory))
    if os.path.isdir(directory) and os.listdir(directory):
        what = "already holds converted weights" if is_converted_dir(directory) else "is not empty"
        raise FileExistsError(f"{directory} {what}; pick a new directory or delete it first.")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError(f"{directory} is a file; pick a new directory.")
    parent = os.path.dirname(directory)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ValueError(f"cannot create {directory}: the folder {parent} does not exist or is "
                         "not writable.")
    params = jax.tree.map(np.asarray, params)
    config = config_to_dict(cfg)
    main = jax.process_index() == 0
    tmp = os.path.join(parent, f".{os.path.basename(directory)}.partial")   # same on every host
    try:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)   # a crashed earlier attempt
        _sync("var_jax_save_converted_start")
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, _PARAMS_DIR), params)
        if main:
            atomic.write_json(os.path.join(tmp, _CONFIG_FILE), config)
            manifest = manifest_lib.build("weights", manifest_lib.array_entries(params), config)
            atomic.write_json(os.path.join(tmp, MANIFEST_FILE), manifest)
            if os.path.isdir(directory):
                os.rmdir(directory)   # empty (checked above)
            os.rename(tmp, directory)
            atomic.fsync_dir(parent)
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    _sync("var_jax_save_converted_done")
    return directory


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def is_converted_dir(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    return os.path.isfile(os.path.join(path, _CONFIG_FILE)) and os.path.isdir(
        os.path.join(path, _PARAMS_DIR))


def read_manifest(directory: str) -> dict:
    path = os.path.join(directory, MANIFEST_FILE)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise manifest_lib.TamperedError(
            f"{path} is missing or unreadable ({type(e).__name__}), so the weights in "
            f"{directory} cannot be checked. Re-convert them with `var-jax convert`, or pass "
            "--allow-tampered (allow_tampered=True) to load them unchecked.") from e
    if not isinstance(manifest, dict) or manifest.get("format") != manifest_lib.FORMAT:
        raise manifest_lib.TamperedError(f"{path} is not a var_jax manifest; re-convert the "
                                         "weights or pass --allow-tampered.")
    return manifest


def load_converted(directory: str | os.PathLike, *, allow_tampered: bool = False
                   ) -> tuple[VQVAEConfig | VARConfig, dict]:
    """Read weights written by `save_converted`: returns (config, params of numpy arrays).

    The config and every array are checked against manifest.json: a mismatch raises
    TamperedError naming the array (or config.json) and both hashes; `allow_tampered` logs it.
    """

    directory = os.path.abspath(os.fspath(directory))
    if not is_converted_dir(directory):
        raise FileNotFoundError(
            f"{directory} is not a converted-weights directory (expected {_CONFIG_FILE} and "
            f"{_PARAMS_DIR}/ written by `var-jax convert`).")
    problems = []
    try:
        manifest = read_manifest(directory)
    except manifest_lib.TamperedError as e:
        if not allow_tampered:
            raise
        manifest, problems = None, [str(e)]
    path = os.path.join(directory, _CONFIG_FILE)
    try:
        with open(path) as f:
            config = json.load(f)
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-convert the weights.") from e
    with ocp.StandardCheckpointer() as ckptr:
        params = as_numpy(ckptr.restore(os.path.join(directory, _PARAMS_DIR)))
    if manifest is not None:
        if manifest_lib.json_digest(config) != manifest_lib.json_digest(manifest["config"]):
            problems.append(f"{path} has sha256 {manifest_lib.json_digest(config)}, the "
                            f"manifest says {manifest_lib.json_digest(manifest['config'])}")
        problems += manifest_lib.compare_arrays(manifest, params, directory)
    manifest_lib.enforce(problems, allow_tampered, f"loading the weights in {directory}")
    _refuse_non_finite(params, directory)
    return config_from_dict(config), params


def as_numpy(tree):
    """A nested dict of arrays as numpy arrays."""
    if isinstance(tree, dict):
        return {k: as_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def _refuse_non_finite(params: dict, directory: str, path: str = "") -> None:
    for k, v in params.items():
        if isinstance(v, dict):
            _refuse_non_finite(v, directory, f"{path}{k}/")
        elif np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            raise ValueError(
                f"{directory}: converted weight {path}{k} holds NaN/Inf "
                f"({non_finite_summary(v)}): the files are damaged, or the weights came from a "
                "training that diverged; convert the released .pth again.")
