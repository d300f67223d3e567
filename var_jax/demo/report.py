"""The demo's printed report and its JSON twin (scores.json) for scripts and tests."""
from __future__ import annotations

import dataclasses
import math
import os

from var_jax import atomic
from var_jax.demo.judge import Scores


@dataclasses.dataclass(frozen=True)
class StageSummary:
    """One trained model: what it is, how long it took, and whether this run trained it."""

    name: str              # "tokenizer" or "transformer"
    steps: int
    seconds: float         # wall time of this run's training (0 when reused)
    reused: bool           # found finished in the work dir, not trained again
    final_loss: float      # training loss of the last logged interval


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100.0 * x:.0f}%"


def format_report(scores: Scores | None, *, reference_frechet: float | None,
                  stages: list[StageSummary], sampling: str, outputs: dict[str, str],
                  total_seconds: float) -> str:
    """The lines `var-jax demo` prints; `class agreement: NN.N%` is the headline (digits only)."""
    lines = ["", "== var-jax demo report =="]
    for st in stages:
        how = "reused from the work dir" if st.reused else f"trained in {st.seconds:.0f} s"
        lines.append(f"{st.name}: {st.steps} steps, {how}; final loss {st.final_loss:.3f}")
    if scores is None:
        lines.append(f"sampling: {sampling} (no judge: it knows the digits only)")
    else:
        per_class = " ".join(f"{c}:{_pct(a)}" for c, a in enumerate(scores.per_class_agreement))
        lines += [
            f"sampling: {scores.num_samples} samples, {sampling}",
            f"class agreement: {100.0 * scores.class_agreement:.1f}%",
            f"  (the judge's label equals the class asked for; per class {per_class})",
            f"held-out accuracy: {100.0 * scores.heldout_accuracy:.1f}%",
            "  (the same judge on real digits that neither it nor the demo trained on)",
            f"Fréchet distance: {scores.frechet:.2f}",
            f"  (samples vs held-out real digits in the judge's hidden features; the real "
            f"training digits score {reference_frechet:.2f})",
        ]
    lines += [f"wrote {what}: {path}" for what, path in outputs.items()]
    lines.append(f"total time: {total_seconds:.0f} s")
    return "\n".join(lines)


def write_scores_json(path: str | os.PathLike, scores: Scores, *, reference_frechet: float,
                      stages: list[StageSummary], total_seconds: float) -> None:
    """Machine-readable copy of the report."""
    payload = {
        "scores": dataclasses.asdict(scores),
        "reference_frechet": reference_frechet,
        "stages": [dataclasses.asdict(s) for s in stages],
        "total_seconds": total_seconds,
    }
    atomic.write_json(path, payload, allow_nan=True)
