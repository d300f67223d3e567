"""Faster-sampling benchmark: images/s of plain, draft-and-refine and pruned sampling (JSON lines).

  python experiments/bench_fast_sampling.py --drafter 30 --refiner 16 --draft-scales 8,6 \
      --prune-depths 16,30 --prune-ratios 0.5,0.75 --batch 1

Random weights of the released shapes (256px tokenizer), initialised on device; cfg 1.5,
top-k 900, top-p 0.96, decode included. Each line: the variant, median wall seconds per call
over --repeats warm calls, images/s, process CPU seconds, first call (compile) seconds, the
1-minute load average at the end of the run and peak memory (on CPU the process's max RSS so far,
which only grows over the run). See README, "Faster sampling (beyond the paper)".
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

from bench_sample import configs, peak_memory, random_params
from var_jax.sampling import sample
from var_jax.var import init_var_params


def preset(name: str) -> str:
    """'30' or 'd30' -> 'd30'; 'tiny' (a toy model, for the test) stays; '0' or '' -> '' (none)."""
    name = name.strip()
    if name in ("", "0", "tiny"):
        return "" if name == "0" else name
    if not name.removeprefix("d").isdigit():
        raise argparse.ArgumentTypeError(f"{name!r} is not a depth: use e.g. 16, d30 or tiny")
    return f"d{name.removeprefix('d')}"


def presets(text: str) -> list[str]:
    """Comma-separated `preset`s, the '0's dropped."""
    return [m for m in map(preset, text.split(",")) if m]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--drafter", type=preset, default="d30",
                   help="drafter depth, e.g. 30 (0: skip draft-refine)")
    p.add_argument("--refiner", type=preset, default="d16", help="refiner depth")
    p.add_argument("--draft-scales", default="8,6", help="N values, comma separated")
    p.add_argument("--prune-depths", type=presets, default=["d16"],
                   help="model depths pruned, comma separated (0: skip pruning)")
    p.add_argument("--prune-ratios", default="0.5,0.75", help="ratios, comma separated")
    p.add_argument("--prune-scales", type=int, default=2, help="last scales pruned")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="timed warm calls (median reported)")
    return p.parse_args(argv)


def time_variant(name: str, run, batch: int, repeats: int) -> dict:
    t = time.perf_counter()
    jax.block_until_ready(run(rng=jax.random.key(0)))
    first = time.perf_counter() - t
    times, cpu = [], []
    for i in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(run(rng=jax.random.key(i + 1)))
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    sec = statistics.median(times)
    row = dict(variant=name, batch=batch, s_per_call=round(sec, 3),
               images_per_s=round(batch / sec, 4), cpu_s_per_call=round(statistics.median(cpu), 2),
               first_call_s=round(first, 1), repeats=repeats,
               load_avg_1m=round(os.getloadavg()[0], 2), backend=jax.default_backend(),
               **peak_memory())
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    labels = np.arange(args.batch) % 1000
    base = dict(cfg=1.5, top_k=900, top_p=0.96)
    models = sorted(set(args.prune_depths) | ({args.drafter} - {""}),   # each built once
                    key=lambda m: 0 if m == "tiny" else int(m[1:]))
    for model in models:
        var_cfg, vae_cfg = configs(model, "float32")
        var_params, vae_params = random_params(var_cfg, vae_cfg)
        run = functools.partial(sample, var_params, vae_params, var_cfg, vae_cfg, labels, **base)
        time_variant(f"{model} plain", run, args.batch, args.repeats)
        if model in args.prune_depths:
            for r in (float(x) for x in args.prune_ratios.split(",")):
                time_variant(f"{model} prune ratio {r} last {args.prune_scales} scales",
                             functools.partial(run, prune_ratio=r, prune_scales=args.prune_scales),
                             args.batch, args.repeats)
        if model == args.drafter:
            ref_cfg, _ = configs(args.refiner, "float32")
            ref_params = init_var_params(ref_cfg, jax.random.key(1))
            for n in (int(x) for x in args.draft_scales.split(",")):
                time_variant(f"{model} drafts {n} + {args.refiner} refines",
                             functools.partial(run, refiner=(ref_params, ref_cfg), draft_scales=n),
                             args.batch, args.repeats)
            del ref_params
        del var_params, vae_params, run
    return 0


if __name__ == "__main__":
    sys.exit(main())
