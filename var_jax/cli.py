"""`var-jax <command>`: one sub-command per module in var_jax/commands/."""
from __future__ import annotations

import argparse
import glob
import importlib
import logging
import os
import sys

from var_jax.commands.options import HelpFormatter

COMMANDS = {"sample": (), "edit": (), "reconstruct": (), "convert": (), "export": (),
            "train": ("train-tokenizer",), "evaluate": (), "verify": (),
            "demo": ()}   # name -> aliases


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="var-jax", description="VAR (next-scale prediction) in JAX: sample, edit, train.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, aliases in COMMANDS.items():
        module = importlib.import_module(f"var_jax.commands.{name}")
        cmd = sub.add_parser(name, aliases=aliases, help=module.HELP, description=module.HELP,
                             formatter_class=HelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def quiet_backends() -> None:
    """Silence what the backends print at start-up; variables already set are kept.

    TensorFlow (the data pipeline only) logs through TF_CPP_MIN_LOG_LEVEL and announces its
    oneDNN kernels. On a machine with no accelerator chips (no /dev/accel*, /dev/vfio,
    /dev/nvidia* or /dev/kfd) JAX is pointed at the CPU, so an installed TPU runtime does not
    probe for TPUs and print its warnings. absl's INFO lines go too.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if not any(glob.glob(p) for p in ("/dev/accel*", "/dev/vfio", "/dev/nvidia*", "/dev/kfd")):
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)   # backend probing


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_backends()
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"var-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
