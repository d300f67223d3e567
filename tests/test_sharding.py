"""Mesh building, the logical rules table, sharded init and a sharded train step on 8 fake CPU devices.

The 8-device checks run this file as a script in a subprocess (XLA_FLAGS must be set before JAX
starts); the test functions in the main process only launch it and read its verdict.
"""
import functools
import json
import os
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from var_jax import sharding

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "train"))
from train_helpers import run_with_8_devices  # noqa: E402


# ------------------------------------------------------------------------ single process checks
def test_make_mesh_resolves_minus_one_and_rejects_bad_sizes():
    devices = jax.devices()[:1]
    mesh = sharding.make_mesh(sharding.MeshConfig(data=-1, fsdp=1, tensor=1), devices)
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    with pytest.raises(ValueError, match="at most one may be -1"):
        sharding.make_mesh(sharding.MeshConfig(data=-1, fsdp=-1), devices)
    with pytest.raises(ValueError, match="needs 2 devices but 1 are present"):
        sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=1), devices)


def test_rules_table_maps_the_transformer_names():
    rules = dict(sharding.LOGICAL_AXIS_RULES)
    for name in ("batch", "embed", "mlp", "qkv", "ada", "vocab", "classes", "cvae", "seq", "heads"):
        assert name in rules, name
    import flax.linen as nn
    # a parameter: width over fsdp, hidden over tensor; an activation: batch takes data+fsdp
    assert nn.logical_to_mesh_axes(("embed", "mlp"), sharding.LOGICAL_AXIS_RULES) == \
        P("fsdp", "tensor")
    assert nn.logical_to_mesh_axes(("batch", "seq", "embed"), sharding.LOGICAL_AXIS_RULES) == \
        P(("data", "fsdp"), None, None)


def test_multihost_detection_reads_the_environment(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES",
                "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES"):
        monkeypatch.delenv(var, raising=False)
    assert not sharding._launched_on_several_hosts()
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert sharding._launched_on_several_hosts()
    assert sharding.maybe_initialize_distributed(force=False) is False


# ------------------------------------------------------------------------ 8 fake devices
@functools.lru_cache(maxsize=None)
def eight_device_results() -> dict:
    return run_with_8_devices(__file__)


def test_sharded_train_step_matches_one_device_and_params_are_sharded():
    r = eight_device_results()["train_step"]
    assert r["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert r["loss_err"] < 1e-5 and r["param_err"] < 1e-5 and r["opt_err"] < 1e-5, r
    assert r["kernel_spec"] == ["fsdp", "tensor"], r        # ("embed", "mlp")
    assert r["kernel_shard_shape"] == [4, 32], r            # (16, 32) split 4 ways on dim 0
    assert r["mu_spec"] == r["kernel_spec"] and r["count_spec"] == [], r
    assert r["fallback_spec"] == [None, "fsdp"], r          # (3, 8): largest divisible dim
    assert r["odd_spec"] == [None], r                       # (5,): nothing divides -> replicated
    assert r["batch_spec"] == [["data", "fsdp"]], r


def test_transformer_params_follow_the_rules_on_a_2x2x2_mesh():
    r = eight_device_results()["var_params"]
    assert r["head_kernel"] == ["fsdp", "tensor"], r        # ("embed", "vocab")
    assert r["class_emb"] == [None, "fsdp"], r              # ("classes", "embed")
    assert r["pos_1LC"] == [None, None, "fsdp"], r          # (None, "seq", "embed")
    assert r["unsharded_dims_divisible"], r


# ------------------------------------------------------------------------ subprocess side
def _spec(x):
    return [list(a) if isinstance(a, tuple) else a for a in x.sharding.spec] + \
        [None] * (x.ndim - len(x.sharding.spec))


def _case_train_step() -> dict:
    from train_helpers import ArrayStream, ToyConfig, ToyTask
    from var_jax.train import loop as loop_lib
    from var_jax.train.loop import LoopConfig

    cfg = ToyConfig(loop=LoopConfig(global_batch=16, total_steps=10), input_noise=0.1)
    task = ToyTask(cfg)
    batch_np = next(ArrayStream(16))
    results = {}
    for name, mesh_cfg, devices in (("one", sharding.MeshConfig(1, 1, 1), jax.devices()[:1]),
                                    ("many", sharding.MeshConfig(2, -1, 1), jax.devices())):
        mesh = sharding.make_mesh(mesh_cfg, devices)
        with sharding.activate(mesh):
            state, shardings, _, _ = loop_lib.create_state(task, cfg.loop, mesh, jax.random.key(3))
            update = loop_lib.compile_train_step(task, shardings, mesh)
            batch = sharding.global_batch(batch_np, mesh)
            for _ in range(2):
                state, metrics = update(state, batch)
        results[name] = (state, metrics, mesh, batch)
    one, many = results["one"], results["many"]
    err = lambda a, b: max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))  # noqa: E731
                           for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    state, mesh = many[0], many[2]
    fallback = sharding.fallback_sharding((3, 8), mesh)
    odd = sharding.fallback_sharding((5,), mesh)
    kernel = state.params["Dense_0"]["kernel"]
    return {
        "mesh": dict(mesh.shape), "loss_err": err(one[1]["loss"], many[1]["loss"]),
        "param_err": err(one[0].params, many[0].params),
        "opt_err": err(one[0].opt_state, many[0].opt_state),
        "kernel_spec": _spec(kernel),
        "kernel_shard_shape": list(kernel.addressable_shards[0].data.shape),
        "mu_spec": _spec(state.opt_state[1][0].mu["Dense_0"]["kernel"]),
        "count_spec": [a for a in state.opt_state[1][0].count.sharding.spec],
        "fallback_spec": list(fallback.spec) + [None] * (2 - len(fallback.spec)),
        "odd_spec": list(odd.spec) + [None] * (1 - len(odd.spec)),
        "batch_spec": _spec(many[3]["x"])[:1],
    }


def _case_var_params() -> dict:
    from var_jax.configs import VARConfig
    from var_jax.var import init_var_params, var_param_logical_axes

    cfg = VARConfig(depth=2, embed_dim=64, num_heads=2, num_classes=10, patch_nums=(1, 2, 3),
                    vocab_size=64, vae_channels=8)
    mesh = sharding.make_mesh(sharding.MeshConfig(2, 2, 2))
    abstract = jax.eval_shape(init_var_params, cfg, jax.random.key(0))
    shardings = sharding.param_shardings(abstract, mesh, logical_axes=var_param_logical_axes(cfg))
    params = jax.jit(init_var_params, static_argnums=0, out_shardings=shardings)(
        cfg, jax.random.key(0))
    ok = all(x.shape[i] % int(np.prod([mesh.shape[a] for a in (ax if isinstance(ax, tuple)
                                                                     else (ax,))])) == 0
             for x in jax.tree.leaves(params)
             for i, ax in enumerate(x.sharding.spec) if ax is not None)
    return {"head_kernel": _spec(params["head"]["kernel"]),
            "class_emb": _spec(params["class_emb"]["embedding"]),
            "pos_1LC": _spec(params["pos_1LC"]), "unsharded_dims_divisible": ok}


if __name__ == "__main__":
    print(json.dumps({"train_step": _case_train_step(), "var_params": _case_var_params()}))
