"""`var-jax <command>`: one sub-command per module in var_jax/commands/."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("sample", "edit", "reconstruct", "convert", "train", "train-tokenizer", "demo",
            "verify")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="var-jax", description="VAR (next-scale prediction) in JAX: sample, edit, train.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"var_jax.commands.{name.replace('-', '_')}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"var-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
