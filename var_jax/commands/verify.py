"""`var-jax verify`: check weights, a checkpoint or a whole run against their manifests."""
from __future__ import annotations

import argparse

HELP = ("Check converted weights, a checkpoint or a whole run (the hash chain of its "
        "checkpoints) against their sha256 manifests; --replay N also re-runs N training steps "
        "and compares them with the stored result.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a `var-jax convert` dir, a work dir, its checkpoints/ or "
                                     "one checkpoints/<step>")
    parser.add_argument("--replay", type=int, default=0, metavar="N",
                        help="re-run N steps from the latest kept checkpoint k with k+N kept, "
                             "with the recorded config and data position, and compare with "
                             "checkpoint k+N (bitwise on CPU; see --tolerance)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="relative tolerance of --replay (default: 0 = bitwise on CPU, "
                             "1e-4 on accelerators)")


def run(args: argparse.Namespace) -> int:
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    from var_jax.verify import verify

    if args.replay < 0:
        raise ValueError(f"--replay={args.replay} must be >= 1 (or 0: no replay).")
    ok, lines = verify(args.path)
    for line in lines:
        print(line)
    if args.replay:
        # local: `var-jax --help` and flag errors stay free of JAX and the models
        from var_jax.train.replay import replay
        report = replay(args.path, args.replay, tolerance=args.tolerance)
        for line in report.lines():
            print(line)
        ok = ok and report.ok
    print("verify: OK" if ok else "verify: FAILED")
    return 0 if ok else 1
