"""`var-jax demo`: train a small VAR on the bundled digits on CPU, sample each digit, judge it."""
from __future__ import annotations

import argparse
import os

HELP = ("Train a small tokenizer and VAR transformer on scikit-learn's bundled handwritten digits "
        "(no download, about 5 minutes on 2 CPU cores), write a grid of samples per digit and a "
        "coarse-to-fine pyramid, and report how often a held-out classifier recognises the digit "
        "asked for. Re-running reuses what is already trained in --workdir.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="var_jax_demo",
                        help="checkpoints, trained tokenizer, PNGs and scores.json go here; a "
                             "finished stage found there is reused")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds both trainings (init, data order), sampling and the judge")
    parser.add_argument("--fast", action="store_true",
                        help="a smoke run of a few steps (under a minute); quality not expected")
    parser.add_argument("--image-size", type=int, default=16, choices=(16, 32, 64),
                        help="side the 8x8 digits are upscaled to: 16 gives 4 scales (default), "
                             "32 gives 6, 64 gives 9 (slower; meant for a GPU or TPU)")


def run(args: argparse.Namespace) -> int:
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    import jax

    from var_jax.demo.config import demo_settings
    from var_jax.demo.run import run_demo

    if not jax.config.jax_compilation_cache_dir:   # re-runs load the compiled programs
        jax.config.update("jax_compilation_cache_dir",
                          os.path.abspath(os.path.join(args.workdir, "jax_cache")))
    settings = demo_settings(fast=args.fast, seed=args.seed, image_size=args.image_size)
    print(run_demo(settings, args.workdir).report)
    return 0
