"""`var-jax export`: a training work dir's checkpoint -> a weights dir every command loads."""
from __future__ import annotations

import argparse

HELP = ("Write the latest (or --step) checkpoint of a `var-jax train` work dir, transformer or "
        "tokenizer, as a weights directory (Orbax params + config.json, EMA weights if the run "
        "keeps them) for `var-jax sample`, `edit`, `reconstruct` and `train --set tokenizer=`.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the --workdir of a `var-jax train` run (local)")
    parser.add_argument("out_dir", help="new directory to write (params/ and config.json)")
    parser.add_argument("--step", type=int, default=None,
                        help="checkpoint step to export (default: the latest)")


def export_run(run_dir: str, out_dir: str, step: int | None = None) -> tuple[str, object, int]:
    """(absolute out_dir, model config, step) after writing checkpoint `step` of `run_dir`."""
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    from var_jax.weights.runs import is_run_dir, load_run
    from var_jax.weights.store import save_converted

    if not is_run_dir(run_dir):
        raise FileNotFoundError(f"RUN_DIR {run_dir} is not a training work dir (no config.json "
                                "and checkpoints/ from `var-jax train --workdir`).")
    cfg, params, step = load_run(run_dir, step)
    return save_converted(out_dir, cfg, params), cfg, step


def run(args: argparse.Namespace) -> int:
    out, cfg, step = export_run(args.run_dir, args.out_dir, args.step)
    print(f"exported step {step} of {args.run_dir} -> {out}")
    print(f"config: {cfg}")
    return 0
