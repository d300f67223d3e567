"""The demo's settings and report text, without training anything."""
import math

import pytest

from var_jax.demo.config import demo_settings
from var_jax.demo.judge import Scores
from var_jax.demo.report import StageSummary, format_report


def test_settings_scales_and_sources():
    s = demo_settings(image_size=32, seed=5)
    assert s.tokenizer.vqvae.patch_nums == s.transformer.var.patch_nums == (1, 2, 3, 4, 6, 8)
    assert s.tokenizer.loop.seed == s.transformer.loop.seed == 5
    folder = s.with_data("folder:/data/pets", num_classes=3)
    assert folder.transformer.var.num_classes == 3
    assert folder.tokenizer.data.source == folder.transformer.data.source == "folder:/data/pets"
    assert folder.name != s.name
    with pytest.raises(ValueError, match="image_size=20"):
        demo_settings(image_size=20)


def test_report_lines():
    scores = Scores(class_agreement=0.934, per_class_agreement=(1.0,) * 9 + (math.nan,),
                    heldout_accuracy=0.97, frechet=3.14159, num_samples=90)
    stages = [StageSummary("tokenizer", 400, 0.0, reused=True, final_loss=0.1),
              StageSummary("transformer", 1000, 123.4, reused=False, final_loss=2.0)]
    text = format_report(scores, reference_frechet=0.5, stages=stages, sampling="cfg 2.0",
                         outputs={"samples": "/x/samples.png"}, total_seconds=200.0)
    lines = text.splitlines()
    for want in ("class agreement: 93.4%", "held-out accuracy: 97.0%", "Fréchet distance: 3.14",
                 "tokenizer: 400 steps, reused from the work dir; final loss 0.100",
                 "transformer: 1000 steps, trained in 123 s; final loss 2.000", "wrote samples: /x/samples.png"):
        assert want in lines, text
    assert "9:n/a" in text
    no_judge = format_report(None, reference_frechet=None, stages=stages, sampling="cfg 2.0",
                             outputs={}, total_seconds=1.0)
    assert "class agreement" not in no_judge and "no judge" in no_judge
