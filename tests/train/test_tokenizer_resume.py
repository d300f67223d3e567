"""Tokenizer training on the shared loop: a run preempted after a checkpoint resumes to exactly the
uninterrupted result (GAN, codebook statistics and EMA included); the export loads as converted
weights. The runs happen in a subprocess on a data=2 x fsdp=4 mesh of 8 fake CPU devices
(fast-compile XLA flags, a compilation cache)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tokenizer_helpers import RESUME_STEPS, VQ, ImageStream, resume_config
from train_helpers import FAST_COMPILE

TIMING = ("examples_per_s", "step_time_s", "mfu")
# three short runs (one compilation, then cache hits) of the GAN step on 8 fake devices: ~70 s CPU
pytestmark = pytest.mark.slow


def run_all(root):
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}",
           "PYTHONPATH": os.pathsep.join([here, os.path.dirname(os.path.dirname(here))])}
    out = subprocess.run([sys.executable, os.path.join(here, "tokenizer_helpers.py"), str(root),
                          str(root / "xla_cache")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-5000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_sharded(report):
    assert report["devices"] == 8
    for name, spec in report["specs"].items():          # fsdp splits each one's largest dim
        assert "fsdp" in spec, (name, spec)


def rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def check_resume(root):
    a, b = rows(root / "straight"), rows(root / "resumed")
    assert [r["step"] for r in b] == list(range(1, RESUME_STEPS + 1))
    assert a == b
    assert a[1]["d_loss"] == 0 and a[2]["d_loss"] > 0           # the GAN starts at step 3
    sa, sb = np.load(root / "straight_state.npz"), np.load(root / "resumed_state.npz")
    assert sorted(sa.files) == sorted(sb.files)
    for part in ("['params']['disc']", "['opt_state']", "['ema_params']", "['extra']['last_hit']"):
        assert any(k.startswith(part) for k in sa.files), part
    for k in sa.files:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def check_export(root):
    from var_jax.convert import load_weights
    from var_jax.vqvae import VQVAE

    cfg = resume_config()
    loaded_cfg, params = load_weights(str(root / "export"), "vae")
    assert loaded_cfg == cfg.vqvae
    state = np.load(root / "straight_state.npz")
    flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(params)}
    assert len(flat) > 20
    for k, v in flat.items():                                   # the EMA weights are exported
        np.testing.assert_array_equal(v, state["['ema_params']['vqvae']" + k], err_msg=k)
    x = next(ImageStream(2, 0))["image"]
    idx = VQVAE(cfg.vqvae).apply({"params": params}, x, method=VQVAE.encode_indices)
    assert [i.shape for i in idx] == [(2, p * p) for p in VQ.patch_nums]


def test_preempted_run_resumes_exactly_on_a_mesh_and_exports(tmp_path):
    """One scenario (the runs are the expensive part): sharded params, identical continuation
    after a preemption, and an export that loads on one device."""
    check_sharded(run_all(tmp_path))
    check_resume(tmp_path)
    check_export(tmp_path)
