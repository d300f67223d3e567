"""experiments/aot_compile.py on a small case: VAR-d8's train step and sampler compiled for a
v5e:2x2 slice (libtpu)."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENT = '''
from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.train.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe(VARConfig.from_depth(8, dtype="bfloat16"), VQVAEConfig.res256(),
                           global_batch=8, epochs=1)
'''


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (pip install libtpu==0.0.42.1 for jax 0.10.2)")
def test_d8_train_step_and_sampler_compile_for_v5e_2x2(tmp_path):
    config = tmp_path / "var_d8.py"
    config.write_text(EXPERIMENT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "aot_compile.py"),
                          "--preset", str(config), "--topology", "v5e:2x2", "--remat", "none",
                          "--sampler"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["program"] for r in rows] == ["train_step", "sampler"]
    row, sampler = rows
    assert row["topology"] == "v5e:2x2" and row["global_batch"] == 8 and row["remat"] == "none"
    assert row["program"] == "train_step" and row["attention"] == "auto"
    assert row["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
    assert row["hbm_bytes"] == 16 * 2**30 and row["fits"] is True
    # d8 has 51M float32 params; params + AdamW moments sharded 4 ways are ~150 MiB per chip.
    assert 100 * 2**20 < row["argument_bytes"] < 400 * 2**20
    assert row["bytes_per_device"] >= row["argument_bytes"]
    assert row["flops"] > 1e10 and row["bytes_accessed"] > 1e8, row
    assert row["kernel_flops"] > 0, row     # "auto" put the splash kernel in the TPU program
    # XLA counts the scanned blocks once: the roofline counts them from the model instead
    # (d8: 0.134 TF per image with dense attention; 8 images over 4 chips).
    assert row["flops"] < row["est_flops"] and 0.5 < row["est_flops"] / (2 * 0.134e12) < 1.5, row
    # d8 on 2 images per chip is bandwidth-bound (about 0.39); the roofline never exceeds 1
    assert row["est_step_s"] >= row["est_flops"] / 197e12 and 0 < row["est_mfu"] <= 1, row
    # the periodic-sample program on the FSDP-sharded params: KV cache, scales, decode
    assert sampler["mesh"] == row["mesh"] and sampler["fits"] is True, sampler
    assert sampler["temp_bytes"] > 0 and sampler["flops"] > 1e10, sampler
