"""Mesh building, the logical rules table, sharded init and a sharded train step on 8 fake CPU devices.

The 8-device checks run this file as a script in a subprocess (XLA_FLAGS must be set before JAX
starts); the test functions in the main process only launch it and read its verdict.
"""
import json
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from var_jax import sharding
from var_jax.var import init_var_params
from train_helpers import TINY_VAR, run_with_8_devices


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
    boxed = jax.eval_shape(lambda k: init_var_params(TINY_VAR, k, boxed=True), jax.random.key(0))
    specs = jax.tree.leaves(nn.get_partition_spec(boxed), is_leaf=lambda x: isinstance(x, P))
    used = {n for spec in specs for n in spec if n is not None}
    assert used and used <= set(rules), used - set(rules)   # no name silently replicated
    assert "embed" in used and "mlp" in used and "vocab" in used
    assert rules["layers"] is None   # the scanned blocks' stack axis is never split
    # a parameter: width over fsdp, hidden over tensor; an activation: batch takes data+fsdp
    assert nn.logical_to_mesh_axes(("embed", "mlp"), sharding.LOGICAL_AXIS_RULES) == \
        P("fsdp", "tensor")
    assert nn.logical_to_mesh_axes(("batch", "seq", "embed"), sharding.LOGICAL_AXIS_RULES) == \
        P(("data", "fsdp"), None, None)
    assert nn.logical_to_mesh_axes(("layers", "embed", "mlp"), sharding.LOGICAL_AXIS_RULES) == \
        P(None, "fsdp", "tensor")


def test_multihost_detection_reads_the_environment(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES",
                "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES"):
        monkeypatch.delenv(var, raising=False)
    assert not sharding._launched_on_several_hosts()
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert sharding._launched_on_several_hosts()
    assert sharding.maybe_initialize_distributed(force=False) is False


# ------------------------------------------------------------------------ 8 fake devices
@pytest.mark.slow   # two compilations of the VAR step (1 and 8 devices) in a subprocess
def test_sharded_var_train_step_matches_one_device_and_params_are_sharded():
    r = run_with_8_devices(__file__, "train_step")
    assert r["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert r["loss_err"] < 1e-5 and r["param_err"] < 1e-5 and r["opt_err"] < 1e-5, r
    assert r["fc1_spec"] == [None, "fsdp", "tensor"], r      # ("layers", "embed", "mlp")
    assert r["fc1_shard_shape"][1:] == [8, 128], r             # (32, 128): 4-way on embed
    assert r["mu_spec"] == r["fc1_spec"] and r["count_spec"] == [], r
    assert r["codebook_spec"] == ["fsdp", None], r           # frozen VQ-VAE, no names: fallback
    assert r["batch_spec"] == [["data", "fsdp"]], r
    assert r["fallback_3x8"] == [None, "fsdp"] and r["fallback_5"] == [None], r


def test_transformer_params_follow_the_rules_on_a_2x2x2_mesh():
    r = run_with_8_devices(__file__, "var_params")
    assert r["head_kernel"] == ["fsdp", "tensor"], r        # ("embed", "vocab")
    assert r["mat_qkv"] == [None, "fsdp", "tensor"], r      # ("layers", "embed", "qkv")
    assert r["class_emb"] == [None, "fsdp"], r              # ("classes", "embed"): 5 rows
    assert r["pos_1LC"] == [None, None, "fsdp"], r          # (None, "seq", "embed")
    assert r["sharded_dims_divisible"], r


# ------------------------------------------------------------------------ subprocess side
def _spec(x):
    return [list(a) if isinstance(a, tuple) else a for a in x.sharding.spec] + \
        [None] * (x.ndim - len(x.sharding.spec))


def _fallback_spec(shape, mesh):
    spec = sharding.fallback_sharding(shape, mesh).spec
    return list(spec) + [None] * (len(shape) - len(spec))


def _case_train_step() -> dict:
    """Two VAR train steps (pre-tokenized batch, class dropout and drop-path on) on one device
    and on a 2x4 data x fsdp mesh."""
    from train_helpers import TINY_VAR, tiny_var_config
    from var_jax.train import loop as loop_lib
    from var_jax.train.var_task import VARTask

    cfg = tiny_var_config(global_batch=16, total_steps=50)
    task = VARTask(cfg)
    rng = np.random.default_rng(0)
    batch_np = {"idx": rng.integers(0, TINY_VAR.vocab_size, (16, TINY_VAR.seq_len), np.int32),
                "label": rng.integers(0, TINY_VAR.num_classes, 16).astype(np.int32)}
    meshes = {"one": sharding.make_mesh(sharding.MeshConfig(1, 1, 1), jax.devices()[:1]),
              "many": sharding.make_mesh(sharding.MeshConfig(2, -1, 1))}
    with sharding.activate(meshes["many"]):   # created sharded; copied whole onto one device
        start, _, _, _ = loop_lib.create_state(task, cfg.loop, meshes["many"], jax.random.key(3))
    start = jax.device_get(start)
    results = {}
    for name, mesh in meshes.items():
        with sharding.activate(mesh):
            shardings = loop_lib.state_initializer(task, cfg.loop, mesh)[2]
            state = jax.tree.unflatten(jax.tree.structure(shardings), [   # its own optimizer
                jax.device_put(x, s) for x, s in zip(jax.tree.leaves(start),
                                                     jax.tree.leaves(shardings))])
            update = loop_lib.compile_train_step(task, shardings, mesh)
            batch = sharding.global_batch(batch_np, mesh)
            for _ in range(2):
                state, metrics = update(state, batch)
        results[name] = (state, metrics, mesh, batch)
    one, many = results["one"], results["many"]
    err = lambda a, b: max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))  # noqa: E731
                           for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    state, mesh = many[0], many[2]
    fc1 = state.params["blocks"]["ffn"]["fc1"]["kernel"]
    adam = state.opt_state[1][0]
    return {
        "mesh": dict(mesh.shape), "loss_err": err(one[1]["loss"], many[1]["loss"]),
        "param_err": err(one[0].params, many[0].params),
        "opt_err": err(one[0].opt_state, many[0].opt_state),
        "fc1_spec": _spec(fc1), "fc1_shard_shape": list(fc1.addressable_shards[0].data.shape),
        "mu_spec": _spec(adam.mu["blocks"]["ffn"]["fc1"]["kernel"]),
        "count_spec": list(adam.count.sharding.spec),
        "codebook_spec": _spec(state.frozen["quantize"]["embedding"]),
        "batch_spec": _spec(many[3]["idx"])[:1],
        "fallback_3x8": _fallback_spec((3, 8), mesh), "fallback_5": _fallback_spec((5,), mesh),
    }


def _case_var_params() -> dict:
    """Shardings of the transformer's params with a tensor axis (abstract: nothing allocated)."""
    from train_helpers import TINY_VAR
    from var_jax.var import init_var_params

    mesh = sharding.make_mesh(sharding.MeshConfig(2, 2, 2))
    abstract = jax.eval_shape(init_var_params, TINY_VAR, jax.random.key(0))
    shardings = sharding.param_shardings(
        jax.eval_shape(lambda k: init_var_params(TINY_VAR, k, boxed=True), jax.random.key(0)), mesh)
    specs = jax.tree.map(lambda x, s: list(s.spec) + [None] * (x.ndim - len(s.spec)),
                         abstract, shardings)
    ok = all(x.shape[i] % np.prod([mesh.shape[a] for a in (ax if isinstance(ax, tuple) else (ax,))])
             == 0 for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings))
             for i, ax in enumerate(s.spec) if ax is not None)
    return {"head_kernel": specs["head"]["kernel"],
            "mat_qkv": specs["blocks"]["attn"]["mat_qkv"]["kernel"],
            "class_emb": specs["class_emb"]["embedding"], "pos_1LC": specs["pos_1LC"],
            "sharded_dims_divisible": bool(ok)}


if __name__ == "__main__":
    case = {"train_step": _case_train_step, "var_params": _case_var_params}[sys.argv[1]]
    print(json.dumps(case()))
