"""`var-jax demo --fast` end to end in a subprocess: report lines, PNGs, scores.json, and reuse."""
import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from var_jax.demo.run import GAP, ZOOM


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    # One compilation cache for the session, shared by the xdist workers and the notebook tests:
    # programs of identical configs compile once.
    session = tmp_path_factory.getbasetemp()
    session = session.parent if os.environ.get("PYTEST_XDIST_WORKER") else session
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(session / "jax_cache"))
    return env


def _demo(workdir, env):
    out = subprocess.run([sys.executable, "-m", "var_jax.cli", "demo", "--fast", "--workdir",
                          str(workdir), "--seed", "3"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_fast_demo_reports_writes_and_reuses(tmp_path, demo_env):
    stdout = _demo(tmp_path, demo_env)
    agreement = re.search(r"^class agreement: (\d+\.\d)%$", stdout, re.M)
    accuracy = re.search(r"^held-out accuracy: (\d+\.\d)%$", stdout, re.M)
    frechet = re.search(r"^Fréchet distance: (\d+\.\d\d)$", stdout, re.M)
    assert agreement and accuracy and frechet, stdout
    assert float(accuracy.group(1)) > 90.0, stdout   # the judge itself is good

    run_dir = tmp_path / "fast-16px-seed3"
    cell = 16 * ZOOM + GAP
    with Image.open(run_dir / "samples.png") as grid:   # a row per digit, 2 samples each
        assert grid.size == (2 * cell - GAP, 10 * cell - GAP)
    with Image.open(run_dir / "pyramid.png") as pyramid:   # one image per scale (1,2,3,4)
        assert pyramid.size == (4 * cell - GAP, cell - GAP)
    scores = json.loads((run_dir / "scores.json").read_text())["scores"]
    assert f"{100 * scores['class_agreement']:.1f}" == agreement.group(1)
    assert scores["num_samples"] == 20

    again = _demo(tmp_path, demo_env)   # both trained stages are found and reused
    assert again.count("reused from the work dir") == 2, again
    assert re.search(r"^class agreement: (\d+\.\d)%$", again, re.M).group(1) == agreement.group(1)
