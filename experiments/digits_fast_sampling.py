"""Quality of the faster samplers on the digits demo: class agreement and Fréchet distance.

  python experiments/digits_fast_sampling.py --workdir var_jax_demo --samples-per-class 50 \
      --sample-seeds 0,1 --out digits_fast_sampling.json

Uses the `var-jax demo` run in --workdir (its tokenizer and its transformer, the "large" model;
both are trained there first if missing) and trains a "small" transformer on the same frozen
tokenizer with the same schedule and data (only depth and width differ), in
<run dir>/small/transformer_run. Then samples every variant with the same class labels and the
same keys (one key per --sample-seeds value), with the demo's sampling settings (cfg, top-k,
top-p), and scores them with one demo judge (fitted once on the held-out "clf_train" digits):
plain large, plain small, draft-refine (large drafts N scales, small refines) for each
--draft-scales, and token pruning on the large model for each --prune-ratios x --prune-scales.
Prints the Fréchet distance of the real training digits (the floor), one JSON line per
(variant, seed) and a Markdown table of mean ± half-range over seeds.
See README, "Faster sampling (beyond the paper)".
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import numpy as np

from var_jax import atomic
from var_jax.convert import load_weights
from var_jax.data import load_split
from var_jax.demo.config import demo_settings
from var_jax.demo.judge import DigitsJudge, score_samples, to_judge_pixels
from var_jax.demo.run import train_tokenizer, train_transformer
from var_jax.evaluation.frechet import frechet_distance_of_features
from var_jax.sampling import sample


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="var_jax_demo", help="the `var-jax demo` work dir")
    p.add_argument("--seed", type=int, default=0, help="the demo's seed (trainings and judge)")
    p.add_argument("--image-size", type=int, default=16, help="the demo's --image-size")
    p.add_argument("--small-depth", type=int, default=2, help="the small transformer's depth")
    p.add_argument("--small-width", type=int, default=64, help="its embed_dim")
    p.add_argument("--samples-per-class", type=int, default=50)
    p.add_argument("--sample-seeds", default="0,1", help="sampling keys, comma separated")
    p.add_argument("--draft-scales", default="3,2,1",
                   help="N values, comma separated (16 px has 4 scales, 32 px 6)")
    p.add_argument("--prune-ratios", default="0.25,0.5,0.75", help="ratios, comma separated")
    p.add_argument("--prune-scales", default="1,2", help="last-scale counts, comma separated")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    return p.parse_args(argv)


def small_settings(settings, depth: int, width: int):
    """The demo's transformer run with another depth and width (same tokenizer, data, steps)."""
    var = dataclasses.replace(settings.transformer.var, depth=depth, embed_dim=width)
    return dataclasses.replace(settings,
                               transformer=dataclasses.replace(settings.transformer, var=var))


def variants(args, large, small) -> list[tuple[str, tuple, dict]]:
    """(name, (params, cfg) of the model sampling first, sample() options) of every variant."""
    rows = [("large plain", large, {}), ("small plain", small, {})]
    for n in (int(x) for x in args.draft_scales.split(",")):
        rows.append((f"large drafts {n} + small refines", large,
                     dict(refiner=small, draft_scales=n)))
    for s in (int(x) for x in args.prune_scales.split(",")):
        for r in (float(x) for x in args.prune_ratios.split(",")):
            rows.append((f"large prune {r} last {s}", large,
                         dict(prune_ratio=r, prune_scales=s)))
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = demo_settings(seed=args.seed, image_size=args.image_size)
    run_dir = os.path.abspath(os.path.join(args.workdir, settings.name))
    tokenizer_dir, _ = train_tokenizer(settings, run_dir)
    large_params, _ = train_transformer(settings, run_dir, tokenizer_dir)
    small = small_settings(settings, args.small_depth, args.small_width)
    small_params, _ = train_transformer(small, os.path.join(run_dir, "small"), tokenizer_dir)
    vae_cfg, vae_params = load_weights(tokenizer_dir, "vae")
    large = (large_params, settings.transformer.var)
    small = (small_params, small.transformer.var)

    def pixels(split):
        images, labels = load_split("digits", split, vae_cfg.image_size)
        return to_judge_pixels(images), labels

    judge = DigitsJudge.fit(*pixels("clf_train"), seed=args.seed)
    test_px, test_labels = pixels("clf_test")
    reference = frechet_distance_of_features(judge.features(pixels("train")[0]),
                                             judge.features(test_px))
    print(json.dumps(dict(reference_frechet=reference)), flush=True)   # real training digits
    asked_B = np.repeat(np.arange(settings.transformer.var.num_classes), args.samples_per_class)
    rows = []
    for name, (params, cfg), kw in variants(args, large, small):
        for seed in (int(x) for x in args.sample_seeds.split(",")):
            t = time.perf_counter()
            imgs = np.asarray(sample(params, vae_params, cfg, vae_cfg, asked_B,
                                     rng=jax.random.key(seed), cfg=settings.cfg,
                                     top_k=settings.top_k, top_p=settings.top_p, **kw))
            scores = score_samples(judge, to_judge_pixels(imgs, (0.0, 1.0)), asked_B, test_px,
                                   test_labels)
            row = dict(variant=name, sample_seed=seed, num_samples=scores.num_samples,
                       class_agreement=scores.class_agreement, frechet=scores.frechet,
                       heldout_accuracy=scores.heldout_accuracy,
                       seconds=round(time.perf_counter() - t, 2))
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        atomic.write_json(args.out, dict(reference_frechet=reference, rows=rows))
    print(markdown_table(rows))
    return 0


def markdown_table(rows: list[dict]) -> str:
    """Mean ± half-range over the sample seeds of each variant."""
    def stat(xs, scale, digits):
        xs = np.asarray(xs) * scale
        return f"{xs.mean():.{digits}f} ± {(xs.max() - xs.min()) / 2:.{digits}f}"

    lines = ["| variant | class agreement % | Fréchet distance |", "|---|---|---|"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        lines.append(f"| {name} | {stat([r['class_agreement'] for r in mine], 100, 1)} | "
                     f"{stat([r['frechet'] for r in mine], 1, 2)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
