"""Helpers of the bad-input catalogue: byte flips, the CLI, random params (the toy run to damage:
tests/train/train_helpers.py, the `toy_run` fixture of tests/conftest.py)."""
from __future__ import annotations

import contextlib
import io
import os

import numpy as np

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def largest_file(folder) -> str:
    """The largest array-data file of an Orbax folder (tensorstore keeps array bytes in `d/`
    folders; the JSON metadata beside them can be larger, and then a flip would only garble
    metadata)."""
    paths = [os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs
             if os.path.basename(r) == "d"]
    return max(paths, key=os.path.getsize)


def flip_byte(path, offset: int | None = None) -> None:
    """XOR one byte (default: the middle one) of `path` in place."""
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        i = len(data) // 2 if offset is None else offset
        data[i] ^= 0x40
        f.seek(0)
        f.write(data)


def run_cli(*argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `var-jax ARGV` in this process."""
    from var_jax.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:   # argparse errors
            code = e.code
    return code, out.getvalue(), err.getvalue()


def random_params(seed: int = 0) -> dict:
    """Incompressible float32 arrays (Orbax stores them raw, so a flipped byte changes a value)."""
    rng = np.random.default_rng(seed)
    return {"blocks_0": {"kernel": rng.normal(size=(64, 64)).astype(np.float32)},
            "head": {"bias": rng.normal(size=(16,)).astype(np.float32)}}
