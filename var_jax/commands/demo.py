"""`var-jax demo`: train a small VAR on the bundled digits on CPU, sample each digit, judge it."""
from __future__ import annotations

import argparse

HELP = ("Train a small tokenizer and VAR transformer on scikit-learn's bundled handwritten digits "
        "(no download, ~5 min on 2 CPU cores), write a grid of samples per digit and a "
        "coarse-to-fine pyramid, and report how often a held-out classifier recognises the digit "
        "asked for. Re-running reuses what is already trained in --workdir.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="var_jax_demo",
                        help="checkpoints, trained tokenizer, PNGs and scores.json go here "
                             "(default ./var_jax_demo); a finished stage found there is reused")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds both trainings (init, data order), sampling and the judge")
    parser.add_argument("--fast", action="store_true",
                        help="a smoke run of a few steps (under a minute); quality not expected")


def run(args: argparse.Namespace) -> int:
    from var_jax.demo.config import demo_settings
    from var_jax.demo.run import run_demo

    settings = demo_settings(fast=args.fast, seed=args.seed)
    print(run_demo(settings, args.workdir, seed=args.seed).report)
    return 0
