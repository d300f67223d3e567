"""The researcher's loop with the CLI only: train a tokenizer, train VAR on it, export it, then
sample, edit and evaluate with the exported models (and sample straight from the run dir)."""
import json

import numpy as np
import pytest
from PIL import Image

from var_jax.cli import main

TOKENIZER_EXP = """
from var_jax.demo.config import demo_settings

def get_config():
    return demo_settings(fast=True).tokenizer
"""
TRANSFORMER_EXP = """
import dataclasses

from var_jax.demo.config import demo_settings

def get_config():
    c = demo_settings(fast=True).transformer
    return dataclasses.replace(c, sample_classes=(0, 7), sample_top_k=0, sample_top_p=0.0,
                               loop=dataclasses.replace(c.loop, sample_every=1000))
"""
SHORT = ["--set", "loop.total_steps=3", "--set", "loop.global_batch=8",
         "--set", "loop.checkpoint_every=3", "--set", "loop.log_every=1"]


@pytest.mark.slow
def test_train_export_sample_edit_evaluate(tmp_path, capsys):
    (tmp_path / "tok.py").write_text(TOKENIZER_EXP)
    (tmp_path / "var.py").write_text(TRANSFORMER_EXP)
    tok_run, var_run = tmp_path / "tok_run", tmp_path / "var_run"
    assert main(["train-tokenizer", "--config", str(tmp_path / "tok.py"),
                 "--workdir", str(tok_run)] + SHORT) == 0
    tokenizer = tok_run / "tokenizer"
    assert f"weights exported to {tokenizer}" in capsys.readouterr().out
    cfg = json.loads((tokenizer / "config.json").read_text())
    assert cfg["kind"] == "vqvae" and cfg["patch_nums"] == [1, 2, 3, 4]   # scales recorded

    assert main(["train", "--config", str(tmp_path / "var.py"), "--workdir", str(var_run),
                 "--set", f"tokenizer={tokenizer}"] + SHORT) == 0
    assert "trained to step 3" in capsys.readouterr().out
    rows = [json.loads(line) for line in (var_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    grid = np.asarray(Image.open(var_run / "samples" / "step_00000003.png"))   # the last step
    assert grid.shape == (16, 34, 3)   # two 16 px samples, 2 px apart

    exported = tmp_path / "var_export"
    assert main(["export", str(var_run), str(exported)]) == 0
    assert f"exported step 3 of {var_run}" in capsys.readouterr().out
    assert json.loads((exported / "config.json").read_text())["kind"] == "var"

    model = ["--vae", str(tokenizer), "--top-k", "0", "--top-p", "0", "--compile-cache", ""]
    from_export, from_run = tmp_path / "export.png", tmp_path / "run.png"
    assert main(["sample", "--var", str(exported), "--classes", "0,7", "--per-class", "2",
                 "--out", str(from_export)] + model) == 0
    out = capsys.readouterr()
    assert "compiling (first call only)" in out.err and "scale 4/4 (4x4) done" in out.out
    assert main(["sample", "--var", str(var_run), "--classes", "0,7", "--per-class", "2",
                 "--out", str(from_run)] + model) == 0
    assert f"--var {var_run}: using the training run's latest checkpoint, step 3" in (
        capsys.readouterr().err)
    a, b = np.asarray(Image.open(from_export)), np.asarray(Image.open(from_run))
    assert a.shape == (16, 4 * 16 + 3 * 2, 3)
    np.testing.assert_array_equal(a, b)   # the export is the run's checkpoint

    edited = tmp_path / "edit.png"
    assert main(["edit", str(from_export), "--class", "3", "--box", "0,0,0.5,1", "--num", "2",
                 "--var", str(exported), "--out", str(edited)] + model) == 0
    assert np.asarray(Image.open(edited)).shape == (16, 4 * 16 + 3 * 2, 3)

    evaluation = tmp_path / "eval"
    assert main(["evaluate", "--out", str(evaluation), "--per-class", "2", "--device-batch", "4",
                 "--batch-size", "4", "--var", str(exported), "--no-progress"] + model) == 0
    with np.load(evaluation / "samples.npz") as f:
        samples = f["arr_0"]
    assert samples.shape == (20, 16, 16, 3) and samples.dtype == np.uint8   # 10 classes x 2
