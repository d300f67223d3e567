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
    """Silence TensorFlow's C++ logs, the TPU runtime's probe of a machine that has no TPU chips
    (no /dev/accel* or /dev/vfio), absl's INFO lines and JAX's backend probing; variables already
    set are kept."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not glob.glob("/dev/accel*") and not os.path.exists("/dev/vfio"):
        os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
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
