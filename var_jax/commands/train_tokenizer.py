"""`var-jax train-tokenizer`: train the multi-scale VQ-VAE from an experiment config, then export it."""
from __future__ import annotations

import argparse

HELP = ("Train the multi-scale VQ-VAE tokenizer (same mesh, checkpoints, auto-resume and input as "
        "`var-jax train`) from an experiments/tokenizer_*.py config; the result is exported to "
        "WORKDIR/tokenizer for `var-jax train --set tokenizer=...` and `var-jax sample`.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="experiment file defining get_config(), e.g. "
                             "experiments/tokenizer_digits.py")
    parser.add_argument("--workdir", required=True,
                        help="checkpoints, metrics.jsonl, tensorboard/ and the exported tokenizer/ "
                             "go here; an existing run there is resumed")
    parser.add_argument("--export", default=None,
                        help="where to write the trained tokenizer (a local directory; default "
                             "WORKDIR/tokenizer)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field, e.g. --set loop.total_steps=100 "
                             "--set loss.disc_weight=0.2 (repeatable)")


def run(args: argparse.Namespace) -> int:
    import logging
    import os

    from var_jax.train.experiment import load_experiment, override
    from var_jax.train.loop import train_and_evaluate
    from var_jax.train.tokenizer_config import TokenizerTrainConfig
    from var_jax.train.tokenizer_task import TokenizerTask, export_tokenizer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    config = override(load_experiment(args.config), args.overrides)
    if not isinstance(config, TokenizerTrainConfig):
        raise ValueError(f"{args.config} returns a {type(config).__name__}, not a "
                         "TokenizerTrainConfig; transformer configs run with `var-jax train`.")
    state = train_and_evaluate(config, args.workdir, TokenizerTask(config))
    path = export_tokenizer(state, config, args.export or os.path.join(args.workdir, "tokenizer"))
    print(f"trained to step {int(state.step)}; metrics in {args.workdir}/metrics.jsonl; "
          f"tokenizer exported to {path}")
    return 0
