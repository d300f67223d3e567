"""Two processes joined by jax.distributed on loopback train, checkpoint and resume exactly as one
process with the same devices and global batch does."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from train_helpers import FAST_COMPILE

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(WORKER)))
TIMING = ("examples_per_s", "step_time_s", "mfu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir, data_dir, resume_at: int, total: int, devices: int, process=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}",
           # the resumed run of a process loads its programs instead of compiling them again
           "JAX_COMPILATION_CACHE_DIR": str(data_dir / f"jax_cache_{devices}"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    if process is not None:
        index, count, port = process
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(count),
                   JAX_PROCESS_ID=str(index))
    return subprocess.Popen([sys.executable, WORKER, str(workdir), str(data_dir), str(resume_at),
                             str(total)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait(procs) -> None:
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-5000:]


def _rows(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


@pytest.mark.slow
def test_two_processes_train_checkpoint_resume_like_one_process(tmp_path):
    data_dir = tmp_path / "tfds"
    one = tmp_path / "one"   # 1 process x 4 devices, 6 straight steps; prepares the digits
    _wait([_launch(one, data_dir, 6, 6, devices=4)])
    two = tmp_path / "two"   # 2 processes x 2 devices: 4 steps, restart from checkpoint 4, to 6
    port = _free_port()
    _wait([_launch(two, data_dir, 4, 6, devices=2, process=(i, 2, port)) for i in range(2)])

    # Each process read only its half of every global batch: process 0 the first 4 examples.
    single = np.load(one / "batches_0.npz")
    hosts = [np.load(two / f"batches_{i}.npz") for i in range(2)]
    assert single["labels"].shape == (6, 8) and hosts[0]["labels"].shape == (6, 4)
    for key in ("labels", "sums"):
        np.testing.assert_array_equal(
            single[key], np.concatenate([hosts[0][key], hosts[1][key]], axis=1))

    a, b = _rows(one), _rows(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b):
        for k in ra:
            np.testing.assert_allclose(rb[k], ra[k], rtol=1e-5, atol=1e-6, err_msg=f"{k} {ra}")
    assert sorted(os.listdir(two / "checkpoints")) == ["2", "4", "6"]
    pa, pb = np.load(one / "final_params.npz"), np.load(two / "final_params.npz")
    assert int(pa["step"]) == int(pb["step"]) == 6 and sorted(pa.files) == sorted(pb.files)
    for k in pa.files:
        np.testing.assert_allclose(pb[k], pa[k], rtol=1e-4, atol=1e-5, err_msg=k)
