"""The shared loop on a tiny task: logs, checkpoints, evals, NaN stop; plus its small helpers."""
import json
import os

import jax
import numpy as np
import pytest

from train_helpers import ToyConfig, ToyTask, toy_streams
from var_jax.sharding import MeshConfig
from var_jax.train import metrics as metrics_lib
from var_jax.train.experiment import load_experiment, override
from var_jax.train.loop import LoopConfig, train_and_evaluate


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_loop_trains_logs_evaluates_and_checkpoints(tmp_path):
    cfg = ToyConfig(loop=LoopConfig(global_batch=32, total_steps=60, log_every=10,
                                    checkpoint_every=20, keep_checkpoints=2, eval_every=30,
                                    eval_batches=4, ema_decay=0.9, progress_bar=False),
                    mesh=MeshConfig(data=-1))
    state = train_and_evaluate(cfg, str(tmp_path), ToyTask(cfg), streams=toy_streams())
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    assert rows[-1]["loss"] < rows[0]["loss"] / 5, [r["loss"] for r in rows]
    assert rows[-1]["acc"] > 0.9
    assert {"eval_loss", "eval_acc"} <= set(rows[2]) and "eval_loss" not in rows[1]
    assert rows[-1]["examples_per_s"] > 0 and "mfu" not in rows[-1]   # CPU: peak unknown
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["40", "60"]
    assert int(state.step) == 60 and state.ema_params is not None
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["loop"]["total_steps"] == 60
    assert json.loads((tmp_path / "provenance.json").read_text())["seed"] == 0
    tags = _tensorboard_tags(tmp_path / "tensorboard")
    assert {"loss", "acc", "lr", "eval_loss"} <= tags


def _tensorboard_tags(logdir) -> set:
    import tensorflow as tf
    tags = set()
    for name in os.listdir(logdir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                tags.add(value.tag)
    return tags


def test_non_finite_loss_stops_the_run_naming_the_step(tmp_path):
    cfg = ToyConfig(loop=LoopConfig(global_batch=16, total_steps=40, log_every=10,
                                    checkpoint_every=5, tensorboard=False, progress_bar=False))
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan at step 7;.*checkpoint is "
                                                 r"step 5"):
        train_and_evaluate(cfg, str(tmp_path), ToyTask(cfg), streams=toy_streams(poison_at=7))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["5"]   # nothing saved after the NaN


def test_loop_config_validation_names_the_field():
    with pytest.raises(ValueError, match="global_batch=6 is not divisible by grad_accum=4"):
        LoopConfig(global_batch=6, total_steps=4, grad_accum=4)
    with pytest.raises(ValueError, match="LoopConfig.total_steps=0 must be >= 1"):
        LoopConfig(global_batch=8, total_steps=0)


def test_metrics_writer_drops_rows_after_the_resumed_step(tmp_path):
    w = metrics_lib.MetricsWriter(tmp_path, tensorboard=False)
    for step in (1, 2, 3, 4):
        w.write(step, {"loss": np.float32(step), "mfu": None})
    metrics_lib.MetricsWriter(tmp_path, resume_step=2, tensorboard=False).write(3, {"loss": 9.0})
    assert _rows(tmp_path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0},
                               {"step": 3, "loss": 9.0}]


def test_mfu_uses_the_peak_of_the_device_kind():
    class Dev:
        device_kind = "NVIDIA H100 80GB HBM3"
    assert metrics_lib.peak_flops("TPU v5 lite") == 197e12
    assert metrics_lib.peak_flops("NVIDIA H100 PCIe") == 756e12
    # 0.93 TFLOP/image at 74 images/s per H100 SXM (989 TFLOP/s bf16 dense): 6.96 %
    assert metrics_lib.mfu(0.93e12, 74.0 * 8, [Dev()] * 8) == pytest.approx(0.0695854, rel=1e-5)

    class Cpu:
        device_kind = "cpu"
    assert metrics_lib.mfu(1e9, 10.0, [Cpu()]) is None          # unknown peak
    assert metrics_lib.mfu(None, 10.0, [Dev()]) is None          # unknown FLOPs


def test_experiment_overrides(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text("from train_helpers import ToyConfig\nfrom var_jax.train.loop import "
                    "LoopConfig\n\ndef get_config():\n    return ToyConfig(loop=LoopConfig("
                    "global_batch=8, total_steps=3))\n")
    cfg = override(load_experiment(str(path)), ["loop.total_steps=7", "mesh.fsdp=-1",
                                                "loop.ema_decay=None", "data=/some/path"])
    assert (cfg.loop.total_steps, cfg.mesh.fsdp, cfg.loop.ema_decay, cfg.data) == \
        (7, -1, None, "/some/path")
    with pytest.raises(ValueError, match="LoopConfig has no field 'total_step'"):
        override(cfg, ["loop.total_step=7"])
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        override(cfg, ["loop.total_steps"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_experiment(str(tmp_path / "missing.py"))
