"""Converted weights on disk: an Orbax params checkpoint plus the model config as JSON."""
from __future__ import annotations

import json
import os

import numpy as np

from var_jax.configs import VARConfig, VQVAEConfig, config_from_dict, config_to_dict

_CONFIG_FILE = "config.json"
_PARAMS_DIR = "params"


def save_converted(directory: str | os.PathLike, cfg: VQVAEConfig | VARConfig, params) -> str:
    """Write `params` (Orbax) and `cfg` (JSON) under `directory`; returns the absolute path.

    Leaves are written as host numpy arrays, so the weights load on any device count.
    """
    import jax
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(os.path.join(directory, _PARAMS_DIR)):
        raise FileExistsError(f"{directory} already holds converted weights; pick a new directory "
                              "or delete it first.")
    os.makedirs(directory, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(directory, _PARAMS_DIR), jax.tree.map(np.asarray, params))
    with open(os.path.join(directory, _CONFIG_FILE), "w") as f:
        json.dump(config_to_dict(cfg), f, indent=1)
    return directory


def is_converted_dir(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    return os.path.isfile(os.path.join(path, _CONFIG_FILE)) and os.path.isdir(
        os.path.join(path, _PARAMS_DIR))


def load_converted(directory: str | os.PathLike) -> tuple[VQVAEConfig | VARConfig, dict]:
    """Read weights written by `save_converted`: returns (config, params of numpy arrays)."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    if not is_converted_dir(directory):
        raise FileNotFoundError(
            f"{directory} is not a converted-weights directory (expected {_CONFIG_FILE} and "
            f"{_PARAMS_DIR}/ written by `var-jax convert`).")
    with open(os.path.join(directory, _CONFIG_FILE)) as f:
        cfg = config_from_dict(json.load(f))
    with ocp.StandardCheckpointer() as ckptr:
        params = _as_numpy(ckptr.restore(os.path.join(directory, _PARAMS_DIR)))
    _refuse_non_finite(params, directory)
    return cfg, params


def _as_numpy(tree):
    if isinstance(tree, dict):
        return {k: _as_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def _refuse_non_finite(params: dict, directory: str, path: str = "") -> None:
    from var_jax.weights.strict import non_finite_summary

    for k, v in params.items():
        if isinstance(v, dict):
            _refuse_non_finite(v, directory, f"{path}{k}/")
        elif np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            raise ValueError(
                f"{directory}: converted weight {path}{k} holds NaN/Inf "
                f"({non_finite_summary(v)}): the files are damaged, or the weights came from a "
                "training that diverged; convert the released .pth again.")
