"""Fuzz the .pth reader: thousands of mutated golden files, each a clean load or our error.

Mutations (tests/weights/pth_mutate.py): pickle byte flips, truncations, spliced, deleted and
duplicated opcode spans, extreme integers, random opcode programs; zip local-header and directory flips, directory
field edits, file truncations and byte flips. Each case runs in-process under a time bound; a
subprocess under RLIMIT_AS runs the memory attacks and more mutants with bounded memory.
"""
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import pth_mutate
from var_jax.weights.torch_zip import CheckpointFormatError, load_torch_state_dict

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "fixtures", "golden")
CASES_PER_SEED = {"var_tiny_l2norm.pth": 2000, "var_tiny_saln.pth": 2000, "vae.pth": 100}
CASE_SECONDS = 2.0


class _Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Hang()


def _outcome(data):
    """'loaded' or 'refused'; anything else (a crash, a hang, a foreign error) is re-raised."""
    try:
        sd = load_torch_state_dict(io.BytesIO(data))
    except CheckpointFormatError:
        return "refused"
    assert type(sd) is dict and all(type(v) is np.ndarray for v in sd.values())
    return "loaded"


@pytest.mark.parametrize("seed_name", list(CASES_PER_SEED))
def test_mutated_golden_files_load_or_raise_our_error(seed_name):
    seed = pth_mutate.Seed(os.path.join(GOLDEN, seed_name))
    rng = np.random.default_rng(sorted(CASES_PER_SEED).index(seed_name))
    counts, failures, slowest = {"loaded": 0, "refused": 0}, [], 0.0
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        for desc, data in pth_mutate.mutants(seed, rng, CASES_PER_SEED[seed_name]):
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
            try:
                counts[_outcome(data)] += 1
            except _Hang:
                failures.append(f"{desc}: no answer within {CASE_SECONDS} s")
            except Exception as e:  # noqa: BLE001 - the point: no other outcome is allowed
                failures.append(f"{desc}: {type(e).__name__}: {e}")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            slowest = max(slowest, time.perf_counter() - start)
    finally:
        signal.signal(signal.SIGALRM, previous)
    print(f"{seed_name}: {counts}, slowest case {slowest * 1e3:.0f} ms")
    assert not failures, f"{len(failures)} bad outcomes, e.g.:\n" + "\n".join(failures[:10])
    assert counts["refused"] > CASES_PER_SEED[seed_name] // 4  # the mutations do bite


_MEMORY_BOUND_SCRIPT = r"""
import io, os, resource, sys
sys.path.insert(0, sys.argv[1])
import numpy as np, pth_craft, pth_mutate
from var_jax.weights.torch_zip import CheckpointFormatError, load_torch_state_dict
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
def attacks():
    n = 3 << 30
    pkl = pth_craft.state_dict({"w": pth_craft.rebuild(pth_craft.storage("0", n // 4), 0,
                                                       (n // 4,), (1,))})
    yield "zip bomb", pth_craft.raw_zip([("archive/data.pkl", pkl, 0, len(pkl), 0),
        ("archive/data/0", pth_craft.zeros_deflate_bomb(n), 8, n, 0)])
    yield "stored entry claims 3 GiB", pth_craft.raw_zip([("archive/data.pkl", pkl, 0, len(pkl), 0),
        ("archive/data/0", bytes(1 << 20), 0, n, 0)])
    pkl = pth_craft.state_dict({"w": pth_craft.rebuild(pth_craft.storage("0", 1), 0,
                                                       (2**20, 2**20), (0, 0))})
    yield "stride-0 terabytes", pth_craft.write_pth(pkl, {"0": bytes(4)})
    keys = [f"{i:03d}" for i in range(1000)]
    pkl = pth_craft.state_dict({k: pth_craft.rebuild(pth_craft.storage(k, 1 << 18), 0,
                                                     (1 << 18,), (1,)) for k in keys})
    local = [("archive/data.pkl", pkl, 0, len(pkl), 0), ("archive/data/000", bytes(1 << 20), 0,
             1 << 20, 0)]
    yield "1000 overlapping entries", pth_craft.raw_zip(
        local, [("archive/data.pkl", 0)] + [(f"archive/data/{k}", 1) for k in keys])
    seed = pth_mutate.Seed(sys.argv[2])
    yield from pth_mutate.mutants(seed, np.random.default_rng(7), 300)
refused = 0
for desc, data in attacks():
    try:
        load_torch_state_dict(io.BytesIO(data))
    except CheckpointFormatError:
        refused += 1
    except MemoryError:
        sys.exit(f"MemoryError on {desc}")
print("refused", refused)
"""


def test_memory_attacks_and_mutants_fit_in_bounded_memory():
    """Under RLIMIT_AS = 1 GiB above the interpreter's start, nothing runs out of memory."""
    import resource  # noqa: F401 - POSIX only, like the limit itself

    probe = subprocess.run(
        [sys.executable, "-c", "import numpy, ml_dtypes, var_jax.weights.torch_zip; "
         "print(open('/proc/self/statm').read().split()[0])"],
        capture_output=True, text=True, check=True)
    limit = int(probe.stdout) * os.sysconf("SC_PAGE_SIZE") + (1 << 30)
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_BOUND_SCRIPT, os.path.dirname(__file__),
         os.path.join(GOLDEN, "var_tiny_l2norm.pth"), str(limit)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) >= 4
