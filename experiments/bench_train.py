"""Benchmark the VAR train step: step time, images/s and MFU for a model size and mesh on this backend.

  python experiments/bench_train.py --depth 8 --batch 8              # the BASELINES.md job
  python experiments/bench_train.py --depth 16 --batch 768 --mesh 1,-1,1 --dtype bfloat16

Times the same jitted, sharded, donated step `var-jax train` runs (AdamW with clipping and
schedules, class dropout, drop-path), fed pre-tokenized batches (random indices at the real
shapes: the step builds the teacher-forcing input from them with a frozen, randomly initialised
res256 tokenizer, as the reference's trainer does). Prints one JSON line: median step time over
--steps timed steps (each waited for), images/s, MFU where the device's peak is known, compile
time, and the process CPU seconds per step (all threads: on a shared machine a fairer figure
than wall time). Reference on the 2-core CI machine (BASELINES.md): depth 8, batch 8, float32,
8.6 s/step with 2 threads (so at most 17.2 CPU seconds).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=8, help="VAR depth (width 64*depth)")
    parser.add_argument("--batch", type=int, default=8, help="global batch (images per step)")
    parser.add_argument("--mesh", default="-1,1,1", help="data,fsdp,tensor sizes (-1 = rest)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--image-size", type=int, default=256, choices=(256, 512))
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--remat", default="none", choices=("none", "dots", "full"),
                        help="what the backward pass recomputes (VARConfig.remat)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the first")
    args = parser.parse_args(argv)

    import jax
    import numpy as np

    from var_jax import sharding
    from var_jax.configs import VARConfig, VQVAEConfig
    from var_jax.train import loop as loop_lib
    from var_jax.train.input import DataConfig
    from var_jax.train.loop import LoopConfig
    from var_jax.train.metrics import mfu
    from var_jax.train.optimizer import OptimConfig
    from var_jax.train.var_task import VARTask, VARTrainConfig

    vae = VQVAEConfig.res256() if args.image_size == 256 else VQVAEConfig.res512()
    var = VARConfig.from_depth(args.depth, patch_nums=vae.patch_nums, dtype=args.dtype,
                               remat=args.remat)
    data, fsdp, tensor = (int(x) for x in args.mesh.split(","))
    cfg = VARTrainConfig(
        var=var, vae=vae, mesh=sharding.MeshConfig(data, fsdp, tensor),
        loop=LoopConfig(global_batch=args.batch, total_steps=1000, grad_accum=args.grad_accum),
        optim=OptimConfig(warmup_steps=10), data=DataConfig(image_size=vae.image_size))
    mesh = sharding.make_mesh(cfg.mesh)
    task = VARTask(cfg)
    rng = np.random.default_rng(0)
    host_batch = {"idx": rng.integers(0, var.vocab_size, (args.batch, var.seq_len), np.int32),
                  "label": rng.integers(0, var.num_classes, args.batch).astype(np.int32)}

    with sharding.activate(mesh):
        t0 = time.perf_counter()
        state, shardings, _, _ = loop_lib.create_state(task, cfg.loop, mesh, jax.random.key(0))
        jax.block_until_ready(state)
        init_s = time.perf_counter() - t0
        update = loop_lib.compile_train_step(task, shardings, mesh)
        batch = sharding.global_batch(host_batch, mesh)
        t0 = time.perf_counter()
        state, metrics = update(state, batch)
        jax.block_until_ready(metrics)
        first_s = time.perf_counter() - t0
        times, cpu0 = [], time.process_time()
        for _ in range(args.steps):
            t0 = time.perf_counter()
            state, metrics = update(state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t0)
        cpu_s = (time.process_time() - cpu0) / args.steps

    step_s = statistics.median(times)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    result = {
        "depth": args.depth, "params_M": round(n_params / 1e6, 2), "batch": args.batch,
        "dtype": args.dtype, "remat": args.remat, "mesh": dict(mesh.shape),
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind, "devices": jax.device_count(),
        "step_time_s": round(step_s, 4), "step_times_s": [round(t, 4) for t in times],
        "cpu_s_per_step": round(cpu_s, 2),   # all threads; on a shared CPU less load-bound
        "images_per_s": round(args.batch / step_s, 2),
        "mfu": mfu(task.flops_per_example, args.batch / step_s, jax.devices()),
        "tflops_per_image": round(task.flops_per_example / 1e12, 4),
        "init_s": round(init_s, 1), "compile_and_first_step_s": round(first_s, 1),
        "loss": float(metrics["loss"]),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
