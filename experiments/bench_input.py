"""Input throughput: the Grain training stream at 256 px with 0, 1, 2... workers, beside a plain loop.

  python experiments/bench_input.py [--images 384] [--batch 32] [--batches 40] [--rounds 3]
                                    [--workers 0,1,2] [--dir DIR]

Writes a class folder of synthetic JPEGs at ImageNet-like size (500x375, about 70 KB each: a
smooth colour field with noise, quality 90) into DIR (a temporary dir by default), prepares it
as a TFDS dataset, then prints images/s of `make_image_stream(..., train=True)` (decode, Lanczos
resize to 288, random 256 crop, batching) for each worker count, and of a single-core loop that
reads the same files and runs the same `preprocess` on them with PIL, over as many images as a
stream is timed for, and of two such loops at once in two processes (the machine's own ceiling
for two decoding processes). A stream is timed after its first `workers + 2` batches, so worker start-up
is not counted. Every configuration runs once per round, the rounds interleaved, and the median
round is printed (a shared or virtual machine's speed drifts by tens of percent within minutes;
interleaving keeps the ratios fair). Then tokens/s of the pre-tokenized training stream
(`make_token_stream`, d16 at 256 px: 680 tokens per image, 4 views, batch 256). The last line is
a JSON summary.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import io
import itertools
import json
import os
import tempfile
import time

import numpy as np
import psutil   # installed with grain (through portpicker)
from PIL import Image

from var_jax.data import make_image_stream, make_token_stream, prepare
from var_jax.data.augment import preprocess
from var_jax.data.tokens import FORMAT

SIZE = (500, 375)   # width, height: the typical ImageNet photo


def write_jpegs(root: str, count: int, seed: int = 0) -> list[str]:
    """`count` JPEGs in two class folders under `root`; returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    yy, xx = np.mgrid[0:SIZE[1], 0:SIZE[0]] / max(SIZE)
    for i in range(count):
        folder = os.path.join(root, f"class_{i % 2}")
        os.makedirs(folder, exist_ok=True)
        a, b, c = rng.uniform(0, 2 * np.pi, 3)
        field = np.stack([np.sin(6 * xx + a), np.cos(5 * yy + b), np.sin(4 * (xx + yy) + c)], -1)
        pixels = 127.5 + 90 * field + rng.normal(0, 12, field.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        paths.append(os.path.join(folder, f"img_{i:05d}.jpg"))
        with open(paths[-1], "wb") as f:
            f.write(buf.getvalue())
    return paths


def cpu_seconds() -> float:
    """CPU time of this process and its live children (the Grain workers)."""
    me = psutil.Process()
    return sum(sum(p.cpu_times()[:2]) for p in [me, *me.children(recursive=True)])


def plain_loop(paths: list[str], image_size: int, count: int) -> tuple[float, float]:
    """(images/s, images per CPU-second) of read + PIL decode + augment of `count` images, one
    core."""
    rng = np.random.default_rng(0)
    start, cpu = time.perf_counter(), cpu_seconds()
    for path in itertools.islice(itertools.cycle(paths), count):
        with open(path, "rb") as f:
            preprocess(f.read(), image_size, rng)
    return (count / (time.perf_counter() - start), count / (cpu_seconds() - cpu))


def parallel_loops(paths: list[str], image_size: int, count: int, procs: int) -> float:
    """Images/s of `procs` plain loops at once in separate processes, `count` images each: what
    the machine itself gives that many decoding processes (its cores may share a physical core,
    a cache or memory bandwidth), the ceiling for as many Grain workers."""
    with concurrent.futures.ProcessPoolExecutor(procs) as pool:
        list(pool.map(plain_loop, [paths] * procs, [image_size] * procs, [procs] * procs))
        start = time.perf_counter()
        list(pool.map(plain_loop, [paths] * procs, [image_size] * procs, [count] * procs))
        return procs * count / (time.perf_counter() - start)


def stream_rate(root: str, data_dir: str, image_size: int, batch: int, batches: int,
                workers: int) -> tuple[float, float]:
    """(images/s, images per CPU-second) of the training stream after its first workers + 2
    batches (every worker started and serving)."""
    with make_image_stream(f"folder:{root}", "train", image_size, batch, 0, True,
                           data_dir=data_dir, process_index=0, process_count=1,
                           num_workers=workers, prefetch=2) as stream:
        for _ in itertools.islice(stream, workers + 2):
            pass
        start, cpu = time.perf_counter(), cpu_seconds()
        for _ in itertools.islice(stream, batches):
            pass
        n = batches * batch
        return n / (time.perf_counter() - start), n / (cpu_seconds() - cpu)


def token_rate(path: str, records: int, views: int, seq_len: int, batch: int,
               batches: int) -> float:
    """Tokens/s of the pre-tokenized training stream over a synthetic token dir."""
    rng = np.random.default_rng(0)
    os.makedirs(path, exist_ok=True)
    np.save(os.path.join(path, "idx.npy"),
            rng.integers(0, 4096, (records, views, seq_len), dtype=np.uint16))
    np.save(os.path.join(path, "label.npy"), rng.integers(0, 1000, records, dtype=np.int32))
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump({"format": FORMAT, "num_records": records, "seq_len": seq_len, "views": views,
                   "index_dtype": "uint16"}, f)
    stream = make_token_stream(path, batch, 0, True, 0, 1, prefetch=2)
    next(stream)
    start = time.perf_counter()
    for _ in itertools.islice(stream, batches):
        pass
    return batches * batch * seq_len / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per stream")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs; median printed")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--dir", default=None, help="where the JPEGs and TFDS data go")
    args = parser.parse_args()
    base = args.dir or tempfile.mkdtemp(prefix="bench_input_")
    root, data_dir = os.path.join(base, "jpegs"), os.path.join(base, "tfds")
    paths = write_jpegs(root, args.images)
    kb = np.mean([os.path.getsize(p) for p in paths]) / 1024
    prepare(f"folder:{root}", data_dir=data_dir)
    load_before = os.getloadavg()
    workers = [int(x) for x in args.workers.split(",")]
    runs = {name: [] for name in ["plain_loop", *(f"workers_{w}" for w in workers)]}
    parallel = []
    for _ in range(args.rounds):
        runs["plain_loop"].append(plain_loop(paths, args.image_size, args.batches * args.batch))
        parallel.append(parallel_loops(paths, args.image_size, args.batches * args.batch // 2, 2))
        for w in workers:
            runs[f"workers_{w}"].append(stream_rate(root, data_dir, args.image_size, args.batch,
                                                    args.batches, w))
    print(f"{args.images} JPEGs {SIZE[0]}x{SIZE[1]}, {kb:.0f} KB each; {args.image_size} px, "
          f"batch {args.batch}, {args.batches * args.batch} images timed per run; median of "
          f"{args.rounds} rounds; {os.cpu_count()} CPUs")
    results = {}
    for name, rounds in runs.items():
        rate, per_cpu = (float(np.median(x)) for x in zip(*rounds))
        results.update({name: rate, f"{name}_per_cpu_s": per_cpu})
        label = ("plain PIL loop (1 core)" if name == "plain_loop" else
                 f"grain stream, {name.split('_')[1]} workers")
        print(f"{label:24s}: {rate:7.1f} images/s ({rate / results['plain_loop']:.2f}x the "
              f"plain loop), {per_cpu:6.1f} images/CPU-s; rounds "
              f"{', '.join(f'{r:.0f}' for r, _ in rounds)}")
    results["plain_loops_2_processes"] = float(np.median(parallel))
    print(f"2 plain loops at once   : {results['plain_loops_2_processes']:7.1f} images/s "
          f"({results['plain_loops_2_processes'] / results['plain_loop']:.2f}x one loop: what "
          f"this machine gives 2 decoding processes); rounds "
          f"{', '.join(f'{r:.0f}' for r in parallel)}")
    results["tokens_per_s"] = token_rate(os.path.join(base, "tokens"), 8192, 4, 680, 256, 30)
    print(f"pre-tokenized stream: {results['tokens_per_s'] / 1e6:.2f} M tokens/s "
          f"({results['tokens_per_s'] / 680:.0f} images/s of d16 at 256 px)")
    print(json.dumps({"load_avg_before": load_before, "load_avg_after": os.getloadavg(),
                      **{k: round(v, 1) for k, v in results.items()}}))


if __name__ == "__main__":
    main()
