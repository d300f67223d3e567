"""Training metrics out: JSONL rows, TensorBoard summaries, sample grids, and model-FLOPs utilisation."""
from __future__ import annotations

import json
import math
from typing import Mapping

import numpy as np
from etils import epath

from var_jax import atomic

# Dense bf16 peak FLOP/s per device, matched as a substring of `device.device_kind` (first hit).
PEAK_FLOPS_BF16 = (
    ("TPU v6", 918e12),        # Trillium (v6e)
    ("TPU v5p", 459e12),
    ("TPU v5 lite", 197e12),   # v5e
    ("TPU v5e", 197e12),
    ("TPU v5", 459e12),
    ("TPU v4", 275e12),
    ("TPU v3", 123e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),          # SXM
    ("A100", 312e12),
    ("L4", 121e12),
)


def peak_flops(device_kind: str) -> float | None:
    """Peak bf16 FLOP/s of one device of this kind, or None when unknown (e.g. CPU)."""
    for name, flops in PEAK_FLOPS_BF16:
        if name.lower() in device_kind.lower():
            return flops
    return None


def mfu(flops_per_example: float | None, examples_per_s: float, devices) -> float | None:
    """Model FLOPs utilisation in [0, 1]; None when the device kind or the FLOPs are unknown."""
    peak = peak_flops(devices[0].device_kind) if devices else None
    if not flops_per_example or not peak:
        return None
    return flops_per_example * examples_per_s / (peak * len(devices))


def first_non_finite(rows: list[tuple[int, Mapping[str, float]]], key: str = "loss"):
    """(step, value) of the first row whose `key` is NaN or inf, else None."""
    for step, row in rows:
        value = float(row[key]) if key in row else 0.0
        if not math.isfinite(value):
            return step, value
    return None


class MetricsWriter:
    """`metrics.jsonl` rows ({"step": ..., name: value}) plus TensorBoard event files.

    Only process 0 writes. On resume from step `resume_step`, rows written after it by the
    interrupted run are dropped, so the log reads as one uninterrupted run.
    """

    def __init__(self, workdir, *, resume_step: int = 0, tensorboard: bool = True,
                 active: bool = True):
        self.active = active
        workdir = epath.Path(workdir)
        self.path = workdir / "metrics.jsonl"
        self._tb = None
        if not active:
            return
        workdir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            rows = [line for line in self.path.read_text().splitlines(True) if line.strip()]
            keep = [r for r in rows if _step_of(r) is not None and _step_of(r) <= resume_step]
            if len(keep) != len(rows):
                atomic.write_text(self.path, "".join(keep))
        if tensorboard:
            self._tb = _tensorboard_writer(str(workdir / "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.active:
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in scalars.items() if v is not None}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            writer, tf, scalar_metadata = self._tb
            with writer.as_default(step=int(step)):
                for k, v in row.items():
                    if k != "step" and isinstance(v, (int, float)):
                        tf.summary.write(k, tf.constant(v, tf.float32), metadata=scalar_metadata)
            writer.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb[0].close()
            self._tb = None


def _step_of(line: str) -> int | None:
    """The step of a metrics row; None for a line cut short by a crash (it is dropped)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _plain(v):
    v = np.asarray(v)
    return v.item() if v.size == 1 else v.tolist()


def _tensorboard_writer(logdir: str):
    """(tf.summary writer, tf, scalar metadata), TensorFlow kept off every accelerator.

    Scalars go through the low-level `tf.summary.write` with the "scalars" plugin tag (what
    TensorBoard's own `scalar` writes), so the tensorboard package is not needed to write them.
    """
    # local: TensorFlow (optional here) only when TensorBoard event files are written
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    tf.config.set_visible_devices([], "GPU")
    plugin = summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    return (tf.summary.create_file_writer(logdir), tf,
            summary_pb2.SummaryMetadata(plugin_data=plugin))
