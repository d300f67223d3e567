"""`var-jax train`: train the transformer or the tokenizer, whichever the experiment config is."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os

from var_jax.commands.options import say

HELP = ("Train the VAR transformer or the VQ-VAE tokenizer (sharded over all devices, Orbax "
        "checkpoints, auto-resume) from an experiments/<name>.py config, whichever it returns; a "
        "tokenizer is then exported to WORKDIR/tokenizer. `train-tokenizer` is the same command.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="experiment file defining get_config(), e.g. experiments/tiny_cpu.py "
                             "or experiments/tokenizer_digits.py")
    parser.add_argument("--workdir", required=True,
                        help="checkpoints, metrics.jsonl, tensorboard/ and samples/ go here (local "
                             "or gs://); an existing run there is resumed")
    parser.add_argument("--export", default=None,
                        help="also write the trained weights here as a weights dir (a tokenizer "
                             "run always exports, by default to WORKDIR/tokenizer)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field, e.g. --set loop.total_steps=100 "
                             "--set tokenizer=runs/tok/tokenizer (repeatable)")
    parser.add_argument("--allow-tampered", action="store_true",
                        help="resume even if the checkpoint fails its sha256 manifest check "
                             "(recorded in the next manifest)")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume with a config other than the checkpoint's (recorded in "
                             "the next manifest)")


def with_tokenizer_space(config):
    """A transformer config whose `tokenizer` is a weights or run dir takes that tokenizer's
    image size, scales and codebook (announced on stderr): the codes are the tokenizer's."""
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    from var_jax.configs import config_from_dict
    from var_jax.weights.runs import is_run_dir, run_model_config
    from var_jax.weights.store import is_converted_dir

    path = config.tokenizer
    if path is None or not os.path.exists(path):
        if path is not None:
            raise FileNotFoundError(f"--set tokenizer={path}: no such file or directory.")
        return config
    if is_converted_dir(path):
        with open(os.path.join(path, "config.json")) as f:
            vae = config_from_dict(json.load(f))
    elif is_run_dir(path):
        vae = run_model_config(path)
    else:
        return config   # a .pth: its scales are not stored, so the experiment's vae decides
    if vae == config.vae:
        return config
    var = dataclasses.replace(config.var, patch_nums=vae.patch_nums, vocab_size=vae.vocab_size,
                              vae_channels=vae.z_channels)
    say(f"tokenizer={path}: training on its tokens (image size {vae.image_size}, scales "
        f"{','.join(map(str, vae.patch_nums))}, {vae.vocab_size} codes of width "
        f"{vae.z_channels}) instead of the experiment's vae")
    return dataclasses.replace(config, vae=vae, var=var,
                               data=dataclasses.replace(config.data, image_size=vae.image_size))


def run(args: argparse.Namespace) -> int:
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    from var_jax.commands.export import export_run
    from var_jax.outputs import check_output_dir
    from var_jax.train.experiment import load_experiment, override
    from var_jax.train.loop import train_and_evaluate
    from var_jax.train.tokenizer_config import TokenizerTrainConfig
    from var_jax.train.tokenizer_task import TokenizerTask, export_tokenizer
    from var_jax.train.var_task import VARTask, VARTrainConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = override(load_experiment(args.config), args.overrides)
    if args.export:
        check_output_dir(args.export, "--export")
    allow = dict(allow_tampered=args.allow_tampered, allow_config_change=args.allow_config_change)
    if isinstance(config, TokenizerTrainConfig):
        state = train_and_evaluate(config, args.workdir, TokenizerTask(config), **allow)
        export = export_tokenizer(state, config,
                                  args.export or os.path.join(args.workdir, "tokenizer"))
    elif isinstance(config, VARTrainConfig):
        config = with_tokenizer_space(config)
        state = train_and_evaluate(config, args.workdir, VARTask(config), **allow)
        export = args.export and export_run(args.workdir, args.export)[0]
    else:
        raise ValueError(f"--config {args.config}: get_config() returns a "
                         f"{type(config).__name__}, not a VARTrainConfig (transformer) or a "
                         "TokenizerTrainConfig (tokenizer).")
    print(f"trained to step {int(state.step)}; metrics in {args.workdir}/metrics.jsonl"
          + (f"; weights exported to {export}" if export else ""))
    return 0
