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
    parser.add_argument("--allow-tampered", action="store_true",
                        help="resume even if the checkpoint fails its sha256 manifest check "
                             "(recorded in the next manifest)")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume with a config other than the checkpoint's (recorded in "
                             "the next manifest)")


def run(args: argparse.Namespace) -> int:
    import logging
    import os

    from var_jax.outputs import check_output_dir
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
    if args.export:
        check_output_dir(args.export, "--export")
    state = train_and_evaluate(config, args.workdir, TokenizerTask(config),
                               allow_tampered=args.allow_tampered,
                               allow_config_change=args.allow_config_change)
    path = export_tokenizer(state, config, args.export or os.path.join(args.workdir, "tokenizer"))
    print(f"trained to step {int(state.step)}; metrics in {args.workdir}/metrics.jsonl; "
          f"tokenizer exported to {path}")
    return 0
