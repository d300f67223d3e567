"""Sampling benchmark: images/s, ms/image, peak memory of `sample`, random weights of real shapes.

  python experiments/bench_sample.py --depth 16 --batch 1           # VAR-d16 + the 256px tokenizer
  python experiments/bench_sample.py --depth 8 --batch 2            # the reference's depth-8 job
  python experiments/bench_sample.py --depth 36 --batch 8 --dtype bfloat16   # 512px, on a GPU

Times the whole jitted program (coarse-to-fine generation with cfg 1.5, top-k 900, top-p 0.96,
then the VQ-VAE decode) on whatever backend JAX finds; compile time is reported separately, and
the process CPU time too (on a shared CPU machine it is steadier than wall time).
Weights are initialised on device (`init_var_params` under jit), nothing is downloaded.
The README records the measured numbers.
"""
from __future__ import annotations

import argparse
import functools
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.sampling import sample
from var_jax.var import init_var_params
from var_jax.vqvae import VQVAE


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=16,
                   help="16/20/24/30 (256px presets), 36 (512px, shared AdaLN) or any depth "
                        "for a paper-shaped 256px model (width 64*depth)")
    p.add_argument("--batch", type=int, default=1, help="images per call")
    p.add_argument("--cfg", type=float, default=1.5)
    p.add_argument("--top-k", type=int, default=900)
    p.add_argument("--top-p", type=float, default=0.96)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="transformer compute dtype")
    p.add_argument("--repeats", type=int, default=3, help="timed warm calls (median reported)")
    return p.parse_args(argv)


def configs(depth: int, dtype: str) -> tuple[VARConfig, VQVAEConfig]:
    if depth == 36:
        return VARConfig.d36(dtype=dtype), VQVAEConfig.res512()
    return VARConfig.from_depth(depth, dtype=dtype), VQVAEConfig.res256()


def random_params(var_cfg: VARConfig, vae_cfg: VQVAEConfig, seed: int = 0):
    k_var, k_vae = jax.random.split(jax.random.key(seed))
    var_params = init_var_params(var_cfg, k_var)
    imgs = jnp.zeros((1, vae_cfg.image_size, vae_cfg.image_size, 3), jnp.float32)
    init = jax.jit(functools.partial(VQVAE(vae_cfg).init, train=False))
    return var_params, init(k_vae, imgs)["params"]


def peak_memory() -> str:
    """Peak device memory where the backend reports it, else the process's peak RSS."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return f"peak device memory {stats['peak_bytes_in_use'] / 2**30:.2f} GiB"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return f"peak RSS {rss_kib / 2**20:.2f} GiB"


def main(argv=None) -> int:
    args = parse_args(argv)
    var_cfg, vae_cfg = configs(args.depth, args.dtype)
    var_params, vae_params = random_params(var_cfg, vae_cfg)
    labels = np.arange(args.batch) % var_cfg.num_classes
    run = functools.partial(sample, var_params, vae_params, var_cfg, vae_cfg, labels,
                            cfg=args.cfg, top_k=args.top_k, top_p=args.top_p)
    t = time.perf_counter()
    jax.block_until_ready(run(rng=jax.random.key(0)))
    first = time.perf_counter() - t
    times, cpu_times = [], []
    for i in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(run(rng=jax.random.key(i + 1)))
        times.append(time.perf_counter() - t)
        cpu_times.append(time.process_time() - c)
    sec = statistics.median(times)
    device = jax.local_devices()[0]
    print(f"bench_sample depth={args.depth} ({var_cfg.seq_len} tokens, {vae_cfg.image_size}px) "
          f"batch={args.batch} dtype={args.dtype} on {jax.local_device_count()}x "
          f"{device.platform}:{device.device_kind}: {sec:.3f} s/call (median of {args.repeats}), "
          f"{1000 * sec / args.batch:.0f} ms/image, {args.batch / sec:.2f} images/s, "
          f"process CPU {statistics.median(cpu_times):.2f} s/call, "
          f"first call incl. compile {first:.1f} s, {peak_memory()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
