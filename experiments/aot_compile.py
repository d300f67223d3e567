"""Prove memory and compile for a TPU slice ahead of time, on a machine without a TPU.

Compiles the real sharded VAR train step (`VARTask.train_step` through the loop's
`compile_train_step`, bf16 as the experiment configs, FSDP mesh) and optionally the sampler
for a named TPU topology with libtpu's compile-only devices, and prints one JSON line per
(preset, topology, mesh, global batch, remat policy):

    python experiments/aot_compile.py --preset d30 --topology v5p:4x4x4
    python experiments/aot_compile.py --preset d36 --topology v5p:4x4x4 --batch 512 --remat dots

Needs the `libtpu` wheel matching jax (`pip install libtpu==0.0.42.1` for jax 0.10.2). The
batch is pre-tokenized (`{"idx", "label"}`, as with `data.tokens=DIR`), so the step holds the
transformer and the tokenizer's quantizer but not its encoder. Without --remat, the policies
none, dots, full are tried in that order and the first that fits ends the search (every
attempt prints its row). `flops` and `bytes_accessed` are XLA's cost analysis, which counts
the scanned block stack's body once and cannot see inside the splash kernels; so the roofline
max(est_flops / peak, bytes_accessed / bandwidth) per chip uses `est_flops`, counted from the
model (`est_train_flops`, with the kernels' block-sparse work `kernel_flops`). est_mfu is the
model FLOPs (`var_train_flops`, dense attention as the reference counts it) over that time: an
upper bound.
"""
from __future__ import annotations

import os

# Must be set before jax is imported: compile-only TPU devices, no eager TPU backend.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")   # other jax processes may hold libtpu

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import topologies  # noqa: E402

from var_jax import sharding  # noqa: E402
from var_jax.configs import ATTENTION_IMPLEMENTATIONS, REMAT_POLICIES, VARConfig  # noqa: E402
from var_jax.train.experiment import load_experiment  # noqa: E402
from var_jax.train.loop import compile_train_step, state_initializer  # noqa: E402
from var_jax.train.var_task import VARTask, var_train_flops  # noqa: E402

EXPERIMENTS = pathlib.Path(__file__).resolve().parent
PRESETS = {"d16": "var_d16_256.py", "d20": "var_d20_256.py", "d24": "var_d24_256.py",
           "d30": "var_d30_256.py", "d36": "var_d36_512.py"}
GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
    """Per-chip peak dense bf16 FLOP/s, HBM bandwidth (bytes/s) and capacity (bytes), from the
    Cloud TPU system-architecture pages."""

    peak_flops: float
    hbm_bandwidth: float
    hbm_bytes: int


CHIPS = {   # topology prefix -> chip (one JAX device per chip: v4 and v5p as megacore)
    "v4": Chip(275e12, 1200e9, 32 * GiB),
    "v5e": Chip(197e12, 819e9, 16 * GiB),
    "v5litepod": Chip(197e12, 819e9, 16 * GiB),
    "v5p": Chip(459e12, 2765e9, 95 * GiB),
    "v6e": Chip(918e12, 1640e9, 32 * GiB),
}


def chip_of(topology: str) -> Chip:
    kind = topology.split(":")[0]
    if kind not in CHIPS:
        raise ValueError(f"--topology {topology!r}: unknown chip {kind!r}; use one of "
                         f"{sorted(CHIPS)}, e.g. v5p:4x4x4 or v5e:8x8.")
    return CHIPS[kind]


def topology_devices(topology: str):
    """Compile-only devices of a named slice (e.g. "v5p:4x4x4"); v4 as megacore chips."""
    kind, _, shape = topology.partition(":")
    if not shape:
        raise ValueError(f"--topology {topology!r} has no shape; write it as kind:shape, "
                         "e.g. v5p:4x4x4 or v5e:8x8.")
    chips = int(np.prod([int(s) for s in shape.split("x")]))
    os.environ.setdefault("TPU_ACCELERATOR_TYPE",
                          f"{'v5litepod' if kind == 'v5e' else kind}-{chips * (2 if kind in ('v4', 'v5p') else 1)}")
    extra = {"chip_config_name": "megacore"} if kind == "v4" else {}
    return topologies.get_topology_desc(topology, "tpu", **extra).devices


def preset_path(preset: str) -> str:
    if preset in PRESETS:
        return str(EXPERIMENTS / PRESETS[preset])
    if preset.endswith(".py"):
        return preset
    raise ValueError(f"--preset {preset!r} is neither one of {sorted(PRESETS)} nor a .py "
                     "experiment file.")


def parse_mesh(text: str | None, default: sharding.MeshConfig) -> sharding.MeshConfig:
    if text is None:
        return default
    parts = text.split(",")
    if len(parts) != 3:
        raise ValueError(f"--mesh {text!r} must be data,fsdp,tensor sizes, e.g. 1,64,1 or 2,-1,1.")
    return sharding.MeshConfig(*(int(p) for p in parts))


def memory_row(compiled) -> dict:
    m = compiled.memory_analysis()
    total = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes)
    return {"bytes_per_device": int(total), "argument_bytes": int(m.argument_size_in_bytes),
            "output_bytes": int(m.output_size_in_bytes), "alias_bytes": int(m.alias_size_in_bytes),
            "temp_bytes": int(m.temp_size_in_bytes)}


def cost_row(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"flops": float(cost.get("flops", 0.0)),
            "bytes_accessed": float(cost.get("bytes accessed", 0.0))}


_OOM = re.compile(r"temporaries \(?([\d.]+)([KMGT])", re.IGNORECASE)


def _oom_temp_bytes(message: str) -> int | None:
    """The temporaries the compiler said it needed, from its out-of-memory message."""
    m = _OOM.search(message)
    if m is None:
        return None
    return int(float(m.group(1)) * {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2)])


def splash_train_flops(cfg: VARConfig, batch_per_device: int, heads_per_device: int,
                       remat: str) -> float:
    """FLOPs per device of the splash-attention kernels of one train step, which XLA's cost
    analysis does not see (Mosaic custom calls): per visible 128x128 block pair and head, the
    forward does 2 matmuls (run twice when the block is rematerialised), dq 3 and dkv 4."""
    from var_jax.nn.attention import block_causal_mask
    from var_jax.nn.block_attention import SPLASH_BLOCK, prefix_lengths, splash_mask

    bk = SPLASH_BLOCK
    m = splash_mask(prefix_lengths(block_causal_mask(cfg.patch_nums)[0, 0]))
    n = m.shape[0] // bk
    pairs = int(m.reshape(n, bk, n, bk).any(axis=(1, 3)).sum())
    matmuls = 2 * (2 if remat != "none" else 1) + 3 + 4
    return (cfg.depth * batch_per_device * heads_per_device * pairs * matmuls
            * 2 * bk * bk * cfg.head_dim)


def est_train_flops(cfg: VARConfig, global_batch: int, devices: int, kernel_flops: float,
                    remat: str) -> float:
    """FLOPs per device of one train step, counted from the model: XLA's cost analysis counts a
    scanned loop's body once, not once per block. `var_train_flops` (dense attention) with the
    splash kernels' block-sparse work in place of the dense attention when they run, plus the
    forward a remat policy recomputes ("full": the blocks' matmuls; both: attention)."""
    C, L, depth = cfg.embed_dim, cfg.seq_len, cfg.depth
    dense_attention = depth * 2 * (2 * L * L * C)              # one image, forward
    block_matmuls = 2 * L * depth * (4 * C * C + 2 * C * cfg.mlp_dim)
    per_image = var_train_flops(cfg)
    if kernel_flops:
        per_image -= 3 * dense_attention                      # the kernels do it (recompute incl.)
    elif remat != "none":
        per_image += dense_attention
    if remat == "full":
        per_image += block_matmuls
    return per_image * global_batch / devices + kernel_flops


def compile_train(train_cfg, devices, mesh_cfg, batch: int, chip: Chip) -> dict:
    """Lower and compile the sharded train step; memory, cost and roofline of one step."""
    mesh = sharding.make_mesh(mesh_cfg, devices)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch % shards:
        raise ValueError(f"--batch {batch} is not divisible by data x fsdp = {shards}; pick a "
                         f"multiple of {shards} or another --mesh.")
    task = VARTask(train_cfg)
    loop = train_cfg.loop
    # Abstract init outside the compile-only mesh (it builds an eager PRNG key on the CPU).
    _, abstract_state, state_sh = state_initializer(task, loop, mesh)
    L = train_cfg.var.seq_len
    batch_sh = sharding.batch_sharding(mesh)
    abstract_batch = {"idx": jax.ShapeDtypeStruct((batch, L), jnp.int32, sharding=batch_sh),
                      "label": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=batch_sh)}
    row = {"mesh": dict(mesh.shape)}
    t0 = time.perf_counter()
    with sharding.activate(mesh):
        lowered = compile_train_step(task, state_sh, mesh).lower(abstract_state, abstract_batch)
        try:
            compiled = lowered.compile()
        except Exception as e:   # the compiler's own out-of-memory verdict
            text = str(e)
            if "hbm" not in text.lower() and "RESOURCE_EXHAUSTED" not in text:
                raise
            row.update(compile_s=round(time.perf_counter() - t0, 1), fits=False,
                       temp_bytes=_oom_temp_bytes(text), error=text.splitlines()[0][:300])
            return row
    row["compile_s"] = round(time.perf_counter() - t0, 1)
    row.update(memory_row(compiled))
    row.update(cost_row(compiled))
    row["fits"] = row["bytes_per_device"] <= chip.hbm_bytes
    var_cfg, tensor = train_cfg.var, mesh.shape["tensor"]
    heads = var_cfg.num_heads // tensor if var_cfg.num_heads % tensor == 0 else var_cfg.num_heads
    row["kernel_flops"] = (splash_train_flops(var_cfg, batch // shards, heads,
                                              var_cfg.remat)
                           if "tpu_custom_call" in lowered.as_text() else 0.0)
    row["est_flops"] = est_train_flops(var_cfg, batch, len(devices), row["kernel_flops"],
                                       var_cfg.remat)
    step_s = max(row["est_flops"] / chip.peak_flops, row["bytes_accessed"] / chip.hbm_bandwidth)
    model_flops = var_train_flops(train_cfg.var) * batch
    row["est_step_s"] = step_s
    row["est_mfu"] = model_flops / (len(devices) * chip.peak_flops * step_s) if step_s else None
    return row


def compile_sampler(train_cfg, devices, mesh_cfg) -> dict:
    """Compile the periodic-sample program (`VARTask.sample`) on the FSDP-sharded params."""
    import flax.linen as nn

    from var_jax import sampling

    mesh = sharding.make_mesh(mesh_cfg, devices)
    task = VARTask(train_cfg)
    _, abstract_state, _ = state_initializer(task, train_cfg.loop, mesh)
    n = len(train_cfg.sample_classes)
    opts = sampling.SamplerOptions(train_cfg.sample_top_k, train_cfg.sample_top_p)
    rep = sharding.replicated(mesh)
    args = ((abstract_state.params, None), abstract_state.frozen,
            jax.ShapeDtypeStruct((n,), jnp.int32, sharding=rep),
            jax.ShapeDtypeStruct((n, 2), jnp.uint32, sharding=rep), None,
            jax.ShapeDtypeStruct((), jnp.float32, sharding=rep))
    t0 = time.perf_counter()
    with sharding.activate(mesh), nn.logical_axis_rules(()):
        fn, _ = sampling.compiled_sampler(train_cfg.var, train_cfg.vae, opts, spread=False)
        compiled = fn.lower(*args).compile()
    row = {"mesh": dict(mesh.shape), "compile_s": round(time.perf_counter() - t0, 1),
           "global_batch": n}
    row.update(memory_row(compiled))
    row.update(cost_row(compiled))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", required=True,
                   help=f"one of {', '.join(sorted(PRESETS))}, or an experiment file's path")
    p.add_argument("--topology", required=True, help="TPU slice, e.g. v5p:4x4x4, v4:4x4x4, v5e:8x8")
    p.add_argument("--batch", type=int, default=None, help="global batch (default: the preset's)")
    p.add_argument("--remat", choices=REMAT_POLICIES, default=None,
                   help="remat policy (default: the first of none, dots, full that fits)")
    p.add_argument("--mesh", default=None, help="data,fsdp,tensor (default: the preset's, FSDP)")
    p.add_argument("--attention", choices=ATTENTION_IMPLEMENTATIONS, default="auto",
                   help="teacher-forcing attention (default auto: splash on TPU)")
    p.add_argument("--sampler", action="store_true", help="also compile the sampler")
    a = p.parse_args(argv)

    chip = chip_of(a.topology)
    devices = topology_devices(a.topology)
    train_cfg = load_experiment(preset_path(a.preset))
    batch = a.batch or train_cfg.loop.global_batch
    if batch < 1:
        raise ValueError(f"--batch {batch} must be >= 1.")
    mesh_cfg = parse_mesh(a.mesh, train_cfg.mesh)
    train_cfg = dataclasses.replace(
        train_cfg, loop=dataclasses.replace(train_cfg.loop, global_batch=batch),
        var=dataclasses.replace(train_cfg.var, attention=a.attention))
    base = {"preset": a.preset, "topology": a.topology, "global_batch": batch,
            "hbm_bytes": chip.hbm_bytes}
    for policy in [a.remat] if a.remat else REMAT_POLICIES:
        cfg = dataclasses.replace(train_cfg, var=dataclasses.replace(train_cfg.var, remat=policy))
        row = {**base, "program": "train_step", "remat": policy, "attention": a.attention}
        row.update(compile_train(cfg, devices, mesh_cfg, batch, chip))
        print(json.dumps(row), flush=True)
        if row["fits"]:
            break
    if a.sampler:
        row = {**base, "program": "sampler", "remat": "none"}
        row.update(compile_sampler(train_cfg, devices, mesh_cfg))
        row["fits"] = row["bytes_per_device"] <= chip.hbm_bytes
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
