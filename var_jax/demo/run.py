"""`var-jax demo` end to end: train the tokenizer, then VAR, sample every digit, judge, draw."""
from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import numpy as np

from var_jax.checkpoint import Checkpointer
from var_jax.configs import scale_begin_ends
from var_jax.convert import load_weights
from var_jax.data import load_split
from var_jax.demo.config import DemoSettings
from var_jax.demo.judge import DigitsJudge, Scores, score_samples, to_judge_pixels
from var_jax.demo.report import StageSummary, format_report, write_scores_json
from var_jax.evaluation.frechet import frechet_distance_of_features
from var_jax.image_io import save_grid
from var_jax.sampling import sample
from var_jax.train.loop import train_and_evaluate
from var_jax.train.tokenizer_task import TokenizerTask, export_tokenizer
from var_jax.train.var_task import VARTask
from var_jax.vqvae import VQVAE
from var_jax.weights.store import is_converted_dir

ZOOM = 4   # pixels per image pixel in the PNGs, so 16px digits are visible
GAP = 4    # white pixels between images (the digits are white on black: no gap, no edges)


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What `run_demo` produced."""

    scores: Scores | None         # None when the data is not the digits (no judge)
    reference_frechet: float | None   # real training digits vs held-out real digits
    stages: list[StageSummary]
    report: str                   # the printed text
    outputs: dict                 # "samples", "pyramid" (and "scores") -> path written


def _banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _finished_steps(directory: str) -> int | None:
    """Latest complete checkpoint step of a training work dir (None: none yet)."""
    if not os.path.isdir(os.path.join(directory, "checkpoints")):
        return None
    with Checkpointer(os.path.join(directory, "checkpoints"), save_every=1) as ckpt:
        return ckpt.latest_step()


def _summary(name: str, workdir: str, steps: int, seconds: float, reused: bool) -> StageSummary:
    """The stage's line of the report; the loss is the last row of its metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        losses = [row["loss"] for row in map(json.loads, f) if "loss" in row]
    return StageSummary(name, steps, seconds, reused, final_loss=losses[-1])


def train_tokenizer(settings: DemoSettings, run_dir: str) -> tuple[str, StageSummary]:
    """Train (or resume, or reuse) the tokenizer; returns its exported weights dir."""
    config = settings.tokenizer
    workdir, export_dir = os.path.join(run_dir, "tokenizer_run"), os.path.join(run_dir, "tokenizer")
    steps = config.loop.total_steps
    if is_converted_dir(export_dir) and _finished_steps(workdir) == steps:
        return export_dir, _summary("tokenizer", workdir, steps, 0.0, reused=True)
    _banner(f"1/3 training the tokenizer ({steps} steps) in {workdir}")
    t0 = time.perf_counter()
    state = train_and_evaluate(config, workdir, TokenizerTask(config))
    export_tokenizer(state, config, export_dir)
    return export_dir, _summary("tokenizer", workdir, steps, time.perf_counter() - t0, False)


def train_transformer(settings: DemoSettings, run_dir: str, tokenizer_dir: str):
    """Train (or resume, or reuse) VAR on the frozen tokenizer; returns (params, summary)."""
    config = dataclasses.replace(settings.transformer, tokenizer=tokenizer_dir)
    workdir = os.path.join(run_dir, "transformer_run")
    steps = config.loop.total_steps
    reused = _finished_steps(workdir) == steps
    if not reused:
        _banner(f"2/3 training the VAR transformer ({steps} steps) in {workdir}")
    t0 = time.perf_counter()
    state = train_and_evaluate(config, workdir, VARTask(config))   # restores when finished
    seconds = 0.0 if reused else time.perf_counter() - t0
    return state.eval_params, _summary("transformer", workdir, steps, seconds, reused)


def run_demo(settings: DemoSettings, workdir: str) -> DemoResult:
    """Train both models (reusing finished ones in `workdir`), sample a row per class, write the
    grid and one sample's pyramid; on the digits, judge the samples. The trainings' seed also
    seeds the sampling and the judge."""
    t_start = time.perf_counter()
    run_dir = os.path.abspath(os.path.join(workdir, settings.name))
    os.makedirs(run_dir, exist_ok=True)
    tokenizer_dir, tok_stage = train_tokenizer(settings, run_dir)
    var_params, var_stage = train_transformer(settings, run_dir, tokenizer_dir)
    vae_cfg, vae_params = load_weights(tokenizer_dir, "vae")
    var_cfg, seed = settings.transformer.var, settings.transformer.loop.seed

    n = settings.samples_per_class
    _banner(f"3/3 sampling {n} images of every class (cfg {settings.cfg}, top-k "
            f"{settings.top_k}, top-p {settings.top_p})")
    asked_B = np.repeat(np.arange(var_cfg.num_classes), n)
    imgs_BHW3, idx_BL = sample(var_params, vae_params, var_cfg, vae_cfg, asked_B,
                               rng=jax.random.key(seed), cfg=settings.cfg, top_k=settings.top_k,
                               top_p=settings.top_p, return_indices=True)
    imgs_BHW3, idx_BL = np.asarray(imgs_BHW3), np.asarray(idx_BL)
    first_idx = [idx_BL[:1, b:e] for b, e in scale_begin_ends(vae_cfg.patch_nums)]
    pyramid_KHW3 = np.asarray(VQVAE(vae_cfg).apply({"params": vae_params}, first_idx,
                                                   method=VQVAE.decode_per_scale))[:, 0]
    outputs = {
        "samples": save_grid(os.path.join(run_dir, "samples.png"), imgs_BHW3, n, GAP, ZOOM),
        "pyramid": save_grid(os.path.join(run_dir, "pyramid.png"), (pyramid_KHW3 + 1.0) / 2.0,
                             len(pyramid_KHW3), GAP, ZOOM),
    }
    stages = [tok_stage, var_stage]
    sampling = f"cfg {settings.cfg}, top-k {settings.top_k}, top-p {settings.top_p}"
    scores = reference = None
    if settings.transformer.data.source == "digits":
        scores, reference = judge_digits(imgs_BHW3, asked_B, vae_cfg.image_size, seed)
        outputs["scores"] = os.path.join(run_dir, "scores.json")
        write_scores_json(outputs["scores"], scores, reference_frechet=reference,
                          stages=stages, total_seconds=time.perf_counter() - t_start)
    report = format_report(scores, reference_frechet=reference, stages=stages,
                           sampling=sampling, outputs=outputs,
                           total_seconds=time.perf_counter() - t_start)
    return DemoResult(scores, reference, stages, report, outputs)


def judge_digits(imgs_BHW3: np.ndarray, asked_B: np.ndarray, image_size: int, seed: int = 0
                 ) -> tuple[Scores, float]:
    """Scores of generated digits (images in [0, 1]) and the reference Fréchet distance.

    The judge trains on "clf_train" and is tested on "clf_test", both read through the same
    input pipeline (and upscaling) as the training digits; the reference is the distance of
    the generator's own training digits ("train") to "clf_test".
    """
    def pixels(split):
        images, labels = load_split("digits", split, image_size)
        return to_judge_pixels(images), labels

    judge = DigitsJudge.fit(*pixels("clf_train"), seed=seed)
    test_px, test_labels = pixels("clf_test")
    train_px, _ = pixels("train")
    scores = score_samples(judge, to_judge_pixels(imgs_BHW3, (0.0, 1.0)), asked_B, test_px,
                           test_labels)
    return scores, frechet_distance_of_features(judge.features(train_px),
                                               judge.features(test_px))
