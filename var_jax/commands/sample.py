"""`var-jax sample`: class ids in, a PNG grid of generated images out."""
from __future__ import annotations

import argparse
import time

import numpy as np

from var_jax.commands.options import (add_fast_sampling_arguments, add_model_arguments,
                                      check_positive, enable_compile_cache, fast_sampling_kwargs,
                                      load_models, say)

__all__ = ["HELP", "add_arguments", "check_classes", "check_sampling", "load_models",
           "parse_classes", "run"]

HELP = ("Generate class-conditional images with a VAR transformer and the VQ-VAE tokenizer "
        "(released .pth files, converted/exported dirs or training work dirs); writes a PNG grid.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", required=True,
                        help="class ids, comma separated, e.g. 207,360,387,974,88")
    parser.add_argument("--per-class", type=int, default=1, help="images per class id")
    parser.add_argument("--out", default="samples.png", help="PNG grid to write")
    parser.add_argument("--nrow", type=int, default=8, help="images per grid row")
    add_model_arguments(parser)
    add_fast_sampling_arguments(parser)


def parse_classes(text: str, flag: str) -> list[int]:
    """"1,4,7" -> [1, 4, 7] (checked against the model by `check_classes`)."""
    try:
        classes = [int(c) for c in text.split(",") if c.strip()]
    except ValueError as e:
        raise ValueError(f"{flag} must be comma separated integers, got {text!r}.") from e
    if not classes:
        raise ValueError(f"{flag} {text!r} names no class ids; give comma separated integers, "
                         "e.g. 207,360.")
    return classes


def check_classes(classes: list[int], flag: str, num_classes: int) -> list[int]:
    """`classes`, each a class id of the model (index num_classes is the null class)."""
    bad = [c for c in classes if not 0 <= c <= num_classes]
    if bad:
        text = ",".join(map(str, classes))
        raise ValueError(f"{flag} {text}: the model knows the classes 0..{num_classes - 1} "
                         f"({num_classes} is the unconditional null class); got {bad}.")
    return classes


def check_sampling(args: argparse.Namespace) -> None:
    """The options shared with `edit`, in flag vocabulary (before any weights are read)."""
    check_positive("--batch-size", args.batch_size)
    if args.top_k < 0:
        raise ValueError(f"--top-k={args.top_k} must be >= 0 (0 turns it off).")
    if not 0.0 <= args.top_p < 1.0:
        raise ValueError(f"--top-p={args.top_p} must be in [0, 1) (0 turns it off).")


def run(args: argparse.Namespace) -> int:
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    import jax

    from var_jax.image_io import save_grid
    from var_jax.outputs import check_output_file
    from var_jax.sampling import sample

    check_output_file(args.out, "--out", image=True)
    check_sampling(args)
    check_positive("--per-class", args.per_class)
    check_positive("--nrow", args.nrow)
    classes = parse_classes(args.classes, "--classes")
    enable_compile_cache(args.compile_cache)
    var_cfg, var_params, vae_cfg, vae_params = load_models(args.var, args.vae, args.patch_nums,
                                                           args.dtype)
    check_classes(classes, "--classes", var_cfg.num_classes)
    fast = fast_sampling_kwargs(args, var_cfg)
    labels = np.repeat(np.asarray(classes, np.int32), args.per_class)
    keys = jax.random.split(jax.random.key(args.seed), labels.size)   # independent of the batch
    bs = min(args.batch_size, labels.size)
    chunks = []
    for start in range(0, labels.size, bs):
        n = min(bs, labels.size - start)
        idx = np.minimum(np.arange(start, start + bs), labels.size - 1)   # one static shape
        lab = labels[idx]
        say(f"batch {start // bs + 1}/{-(-labels.size // bs)}: {n} images "
            f"(classes {sorted(set(lab[:n].tolist()))})"
            + (", compiling (first call only)..." if start == 0 else ""))
        t = time.perf_counter()
        imgs = sample(var_params, vae_params, var_cfg, vae_cfg, lab, rng=keys[idx], cfg=args.cfg,
                      top_k=args.top_k, top_p=args.top_p, more_smooth=args.more_smooth,
                      progress=True, **fast)
        chunks.append(np.asarray(imgs)[:n])
        say(f"  {n} images in {time.perf_counter() - t:.1f} s")
    save_grid(args.out, np.concatenate(chunks), args.nrow)
    print(f"wrote {labels.size} images to {args.out}")
    return 0
