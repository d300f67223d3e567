"""Weights of a training work dir (`var-jax train`): its config.json plus Orbax checkpoints."""
from __future__ import annotations

import json
import os

import orbax.checkpoint as ocp

from var_jax import manifest as manifest_lib
from var_jax.checkpoint import Checkpointer, DamagedCheckpointError
from var_jax.configs import VARConfig, VQVAEConfig, config_from_dict
from var_jax.weights.store import as_numpy

_CHECKPOINTS, _CONFIG, _STATE = "checkpoints", "config.json", "state"


def is_run_dir(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    return os.path.isdir(os.path.join(path, _CHECKPOINTS)) and os.path.isfile(
        os.path.join(path, _CONFIG))


def checkpoint_steps(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the complete checkpoints, ascending (Orbax renames a checkpoint to its bare step
    number only once every item is written)."""
    root = os.path.join(os.fspath(run_dir), _CHECKPOINTS)
    return sorted(int(d) for d in os.listdir(root)
                  if d.isdigit() and os.path.isdir(os.path.join(root, d, _STATE)))


def run_model_config(run_dir: str | os.PathLike) -> VARConfig | VQVAEConfig:
    """The model a run trains: `var` of a transformer run, `vqvae` of a tokenizer run."""
    with open(os.path.join(os.fspath(run_dir), _CONFIG)) as f:
        config = json.load(f)
    if "vqvae" in config:
        return config_from_dict({"kind": "vqvae", **config["vqvae"]})
    if "var" in config:
        return config_from_dict({"kind": "var", **config["var"]})
    raise ValueError(f"{run_dir}/{_CONFIG} names neither a transformer (var) nor a tokenizer "
                     "(vqvae) model; is this a `var-jax train` work dir?")


def load_run(run_dir: str | os.PathLike, step: int | None = None, *,
             allow_tampered: bool = False):
    """(model config, numpy params, step) of a run's checkpoint `step` (default: the latest);
    the EMA weights when the run keeps them, else the live ones. The checkpoint's arrays are
    checked against its manifest (TamperedError naming the array; `allow_tampered`: a
    warning)."""
    run_dir = os.path.abspath(os.fspath(run_dir))
    cfg = run_model_config(run_dir)
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise FileNotFoundError(
            f"{run_dir} has no complete checkpoint yet; let `var-jax train` run to the end (it "
            "checkpoints every loop.checkpoint_every steps and at the last step).")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise FileNotFoundError(f"{run_dir} has no checkpoint of step {step}; --step must be one "
                                f"of {steps}.")
    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(os.path.join(run_dir, _CHECKPOINTS, str(step), _STATE))
    where = f"checkpoint step {step} of {run_dir}"
    try:
        with Checkpointer(os.path.join(run_dir, _CHECKPOINTS), read_only=True) as ck:
            problems = manifest_lib.compare_arrays(ck.manifest(step), state, where)
    except DamagedCheckpointError as e:
        problems = [f"{where}: {e}"]
    manifest_lib.enforce(problems, allow_tampered, f"loading weights from {where}")
    params = state.get("ema_params") or state["params"]
    if isinstance(cfg, VQVAEConfig):
        params = params["vqvae"]   # a tokenizer run also trains a discriminator
    return cfg, as_numpy(params), step
