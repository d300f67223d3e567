"""Sampling benchmark: images/s, ms/image, compile s, peak memory of `sample`, random weights.

  python experiments/bench_sample.py --depth 16 --batch 1           # VAR-d16 + the 256px tokenizer
  python experiments/bench_sample.py --depth 8 --batch 2            # the reference's depth-8 job
  python experiments/bench_sample.py --matrix                       # d16..d30 (256px), d36 (512px)
  python experiments/bench_sample.py --matrix --presets d16 d30 --batches 1 8 --dtype bfloat16

Times the whole jitted program (coarse-to-fine generation with cfg 1.5, top-k 900, top-p 0.96,
then the VQ-VAE decode) on whatever backend JAX finds. Each row prints one JSON line: images/s,
ms/image (median of --repeats warm calls), compile s (first call minus a warm call), process
CPU s per call, peak memory (device `memory_stats()` where the backend has it, else the
process's peak RSS, which only grows over a matrix run). Weights are initialised on device
(`init_var_params` under jit), nothing is downloaded. Preset `tiny` is a toy model for tests.
"""
from __future__ import annotations

import argparse
import functools
import json
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

MATRIX_PRESETS = ("d16", "d20", "d24", "d30", "d36")
MATRIX_BATCHES = (1, 8, 64)
_TINY_PN = (1, 2, 3, 4)
_TINY_VAE = VQVAEConfig(vocab_size=64, z_channels=8, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                        patch_nums=_TINY_PN, image_size=8, norm_groups=8)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=16,
                   help="16/20/24/30 (256px presets), 36 (512px, shared AdaLN) or any depth "
                        "for a paper-shaped 256px model (width 64*depth)")
    p.add_argument("--batch", type=int, default=1, help="images per call")
    p.add_argument("--matrix", action="store_true",
                   help="run every --presets x --batches row instead of --depth/--batch")
    p.add_argument("--presets", nargs="+", default=list(MATRIX_PRESETS),
                   help=f"matrix presets: {' '.join(MATRIX_PRESETS)} or tiny, or dN for any N")
    p.add_argument("--batches", nargs="+", type=int, default=list(MATRIX_BATCHES))
    p.add_argument("--cfg", type=float, default=1.5)
    p.add_argument("--top-k", type=int, default=900)
    p.add_argument("--top-p", type=float, default=0.96)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="transformer compute dtype (logits and sampling stay float32)")
    p.add_argument("--repeats", type=int, default=3, help="timed warm calls (median reported)")
    args = p.parse_args(argv)
    for name in args.presets:
        if name != "tiny" and not (name[:1] == "d" and name[1:].isdigit() and int(name[1:]) > 0):
            p.error(f"--presets {name}: use d16, d20, d24, d30, d36 (or dN, or tiny)")
    if min(args.batches) < 1 or args.batch < 1 or args.repeats < 1:
        p.error("--batch, --batches and --repeats must be >= 1")
    return args


def configs(preset: str, dtype: str) -> tuple[VARConfig, VQVAEConfig]:
    """'tiny', 'd36' (512px) or 'dN' (paper-shaped 256px model of depth N)."""
    if preset == "tiny":
        return VARConfig(depth=2, embed_dim=64, num_heads=2, num_classes=10, patch_nums=_TINY_PN,
                         vocab_size=_TINY_VAE.vocab_size, vae_channels=_TINY_VAE.z_channels,
                         dtype=dtype), _TINY_VAE
    depth = int(preset[1:])
    if depth == 36:
        return VARConfig.d36(dtype=dtype), VQVAEConfig.res512()
    return VARConfig.from_depth(depth, dtype=dtype), VQVAEConfig.res256()


def random_params(var_cfg: VARConfig, vae_cfg: VQVAEConfig, seed: int = 0):
    k_var, k_vae = jax.random.split(jax.random.key(seed))
    var_params = init_var_params(var_cfg, k_var)
    imgs = jnp.zeros((1, vae_cfg.image_size, vae_cfg.image_size, 3), jnp.float32)
    init = jax.jit(functools.partial(VQVAE(vae_cfg).init, train=False))
    return var_params, init(k_vae, imgs)["params"]


def peak_memory() -> dict:
    """Peak device memory where the backend reports it, else the process's peak RSS."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return {"peak_memory_gib": round(stats["peak_bytes_in_use"] / 2**30, 3),
                "memory_kind": "device peak_bytes_in_use"}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_gib": round(rss_kib / 2**20, 3), "memory_kind": "process max RSS"}


def bench_row(preset: str, batch: int, args: argparse.Namespace) -> dict:
    var_cfg, vae_cfg = configs(preset, args.dtype)
    var_params, vae_params = random_params(var_cfg, vae_cfg)
    labels = np.arange(batch) % var_cfg.num_classes
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
    return {"preset": preset, "batch": batch, "dtype": args.dtype, "tokens": var_cfg.seq_len,
            "image_size": vae_cfg.image_size,
            "device": f"{jax.local_device_count()}x {device.platform}:{device.device_kind}",
            "images_per_s": round(batch / sec, 3), "ms_per_image": round(1000 * sec / batch, 1),
            "s_per_call": round(sec, 3), "compile_s": round(max(first - sec, 0.0), 1),
            "first_call_s": round(first, 1), "cpu_s_per_call": round(statistics.median(cpu_times), 2),
            **peak_memory()}


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = ([(p, b) for p in args.presets for b in args.batches] if args.matrix
            else [(f"d{args.depth}", args.batch)])
    for preset, batch in rows:
        print(json.dumps(bench_row(preset, batch, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
