"""`var-jax train`: train the VAR transformer from an experiment config, resuming from the work dir."""
from __future__ import annotations

import argparse

HELP = ("Train the VAR transformer (sharded over all devices, Orbax checkpoints, auto-resume) "
        "from an experiments/<name>.py config.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="experiment file defining get_config(), e.g. experiments/tiny_cpu.py")
    parser.add_argument("--workdir", required=True,
                        help="checkpoints, metrics.jsonl, tensorboard/ and samples/ go here (local "
                             "or gs://); an existing run there is resumed")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field, e.g. --set loop.total_steps=100 "
                             "--set tokenizer=/weights/vae (repeatable)")
    parser.add_argument("--allow-tampered", action="store_true",
                        help="resume even if the checkpoint fails its sha256 manifest check "
                             "(recorded in the next manifest)")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume with a config other than the checkpoint's (recorded in "
                             "the next manifest)")


def run(args: argparse.Namespace) -> int:
    import logging

    from var_jax.train.experiment import load_experiment, override
    from var_jax.train.loop import train_and_evaluate
    from var_jax.train.var_task import VARTask, VARTrainConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    config = override(load_experiment(args.config), args.overrides)
    if not isinstance(config, VARTrainConfig):
        raise ValueError(f"{args.config} returns a {type(config).__name__}, not a VARTrainConfig; "
                         "tokenizer configs run with `var-jax train-tokenizer`.")
    state = train_and_evaluate(config, args.workdir, VARTask(config),
                               allow_tampered=args.allow_tampered,
                               allow_config_change=args.allow_config_change)
    print(f"trained to step {int(state.step)}; metrics in {args.workdir}/metrics.jsonl")
    return 0
