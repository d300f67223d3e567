"""A training process SIGKILLed between checkpoints resumes to exactly the uninterrupted result."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from train_helpers import FAST_COMPILE

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_helpers.py")
TIMING = ("examples_per_s", "step_time_s", "mfu")


def _start(workdir, total_steps: int, delay: float) -> subprocess.Popen:
    root = os.path.dirname(os.path.dirname(os.path.dirname(HELPERS)))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": root, "XLA_FLAGS": FAST_COMPILE}
    return subprocess.Popen([sys.executable, HELPERS, str(workdir), str(total_steps), str(delay)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(workdir) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-4000:]


def test_sigkill_between_checkpoints_then_resume_matches_uninterrupted_run(tmp_path):
    total = 25
    straight = _start(tmp_path / "straight", total, 0.0)
    victim = _start(tmp_path / "killed", total, 0.15)
    deadline = time.time() + 240
    while time.time() < deadline:        # kill once step 13..17 is logged (checkpoint 10 done)
        steps = [r["step"] for r in _rows(tmp_path / "killed")]
        if steps and steps[-1] >= 13:
            victim.send_signal(signal.SIGKILL)
            break
        assert victim.poll() is None, victim.communicate()[1][-4000:]
        time.sleep(0.02)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    killed_at = _rows(tmp_path / "killed")[-1]["step"]
    assert 13 <= killed_at < 20, killed_at
    assert sorted(os.listdir(tmp_path / "killed" / "checkpoints")) == ["10"]

    _finish(_start(tmp_path / "killed", total, 0.0))       # same command: resumes from step 10
    _finish(straight)

    a, b = _rows(tmp_path / "straight"), _rows(tmp_path / "killed")
    assert [r["step"] for r in b] == list(range(1, total + 1))   # rows after 10 were rewritten
    assert a == b
    pa = np.load(tmp_path / "straight" / "final_params.npz")
    pb = np.load(tmp_path / "killed" / "final_params.npz")
    assert sorted(pa.files) == sorted(pb.files) and len(pa.files) > 5
    for k in pa.files:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
