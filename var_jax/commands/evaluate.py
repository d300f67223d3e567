"""`var-jax evaluate`: sample the paper's 50,000 images, resumably, and score FID/sFID/IS/P/R."""
from __future__ import annotations

import argparse
import hashlib
import os
import time

import numpy as np

from var_jax.commands.options import (HelpFormatter, add_fast_sampling_arguments,
                                      add_model_arguments)

HELP = "Sample N = per-class x classes images with the paper's protocol and score them."
PROTOCOL = """\
protocol (the paper's ImageNet 256 numbers): 50 images per class for all 1000 classes (N =
50,000), cfg 1.5, top-k 900, top-p 0.96, more_smooth off (the defaults), scored by the
OpenAI evaluator against VIRTUAL_imagenet256_labeled.npz: FID and sFID against its stored
statistics, precision/recall (k=3) against its 10,000 images, Inception Score over 10 splits.

seeds: image i of class c uses fold_in(fold_in(key(--seed), c), i), and every compiled call
holds --device-batch images per device, so the samples do not depend on --batch-size, the
device count or the host count (another --device-batch changes only float rounding: on CPU, a
few pixel values by 1/255). Position p of the output holds class p % C (the classes
interleave, so each Inception Score split sees them all). The batch is sharded over the local
devices; with several hosts (jax.distributed), each takes a contiguous slice of the positions
and --out must be a shared folder.

resuming: every --batch-size images are saved atomically under OUT/chunks/; run the same command
again after a crash or preemption and it continues where it stopped (OUT/settings.json guards
against changed flags). At the end OUT/samples.npz (arr_0, uint8 N x H x W x 3, the OpenAI
evaluator's input) and, with --inception, OUT/scores.json are written.

features: --protocol tf resizes as the evaluator's TF graph (the paper's numbers); pytorch as
pytorch-fid. The two differ slightly: compare FIDs only within one protocol."""


class _HelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag; the protocol epilog kept as written."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _HelpFormatter
    parser.epilog = PROTOCOL
    parser.add_argument("--out", required=True,
                        help="run folder: chunks/, settings.json, samples.npz, scores.json")
    parser.add_argument("--per-class", type=int, default=50,
                        help="images per class (every class of the model; 50 x 1000 = 50,000)")
    parser.add_argument("--inception", default=None,
                        help="pytorch-fid's FID Inception weights "
                             "(pt_inception-2015-12-05-6726825d.pth, or an .npz of its arrays "
                             "under the same keys); without it only samples.npz is written")
    parser.add_argument("--reference", default=None,
                        help="reference batch .npz (OpenAI format, e.g. "
                             "VIRTUAL_imagenet256_labeled.npz) or a data source (imagenet2012, "
                             "folder:<path>) whose statistics are computed once into OUT/"
                             "reference_stats-<hash>.npz")
    parser.add_argument("--reference-split", default="train",
                        help="split of a --reference data source")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir of a --reference source")
    parser.add_argument("--manual-dir", default=None,
                        help="manual download dir of a --reference source (imagenet2012)")
    parser.add_argument("--protocol", choices=("tf", "pytorch"), default="tf",
                        help="Inception resize/normalisation: the OpenAI evaluator's TF graph "
                             "or pytorch-fid")
    parser.add_argument("--device-batch", type=int, default=16,
                        help="images per device per compiled call; part of the settings, as "
                             "XLA's float rounding depends on the shape")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_arguments(parser)
    add_fast_sampling_arguments(parser)
    batch = next(a for a in parser._actions if a.dest == "batch_size")
    batch.help = ("images per saved chunk (rounded up to a multiple of --device-batch x local "
                  "devices); how often progress is saved, it does not change the samples")


def _check_reference(args) -> None:
    """Fail before sampling, not after, on a --reference that cannot be read."""
    if args.reference is None:
        return
    if not args.inception:
        raise ValueError("--reference needs --inception (the FID Inception weights) to score.")
    if args.reference.endswith(".npz"):
        if not os.path.isfile(args.reference):
            raise FileNotFoundError(f"--reference {args.reference!r}: no such file.")
    else:
        # local: `var-jax --help` and flag errors stay free of JAX and the models
        from var_jax.data.sources import parse_source
        parse_source(args.reference)


def _reference(args, params, inception_fingerprint: str, image_size: int):
    """ReferenceStats from --reference; a data source's are computed once, cached in OUT."""
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    from var_jax.evaluation.reference_stats import (read_reference_npz, reference_from_source,
                                                    write_reference_npz)

    if args.reference.endswith(".npz"):
        return read_reference_npz(args.reference, params, args.protocol, args.batch_size)
    what = f"{args.reference}|{args.reference_split}|{args.protocol}|{inception_fingerprint}|" \
           f"{image_size}"
    digest = hashlib.sha256(what.encode()).hexdigest()[:12]
    cache = os.path.join(args.out, f"reference_stats-{digest}.npz")
    if not os.path.exists(cache):
        print(f"computing reference statistics of {args.reference} ({args.reference_split}, "
              f"{image_size} px) into {cache}", flush=True)
        write_reference_npz(cache, reference_from_source(
            args.reference, args.reference_split, image_size, params, args.protocol,
            data_dir=args.data_dir, manual_dir=args.manual_dir, batch_size=args.batch_size))
    return read_reference_npz(cache)


def scores_of(acts: dict, reference) -> dict:
    """FID, sFID, precision, recall (when a reference is given) and the Inception Score."""
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    from var_jax.evaluation.frechet import feature_statistics, frechet_distance
    from var_jax.evaluation.inception_score import inception_score
    from var_jax.evaluation.precision_recall import precision_recall

    n = len(acts["pool"])
    is_mean, is_std = inception_score(acts["logits"], min(10, n))
    out = {"inception_score": is_mean, "inception_score_std": is_std,
           "inception_score_splits": min(10, n), "fid": None, "sfid": None, "precision": None,
           "recall": None}
    if reference is not None:
        out["fid"] = frechet_distance(*feature_statistics(acts["pool"]), reference.mu,
                                      reference.sigma)
        if reference.mu_s is not None:
            out["sfid"] = frechet_distance(*feature_statistics(acts["spatial"]), reference.mu_s,
                                           reference.sigma_s)
        if reference.pool is not None:
            out["precision"], out["recall"] = precision_recall(reference.pool, acts["pool"])
    return out


def _write_scores(args, acts: dict, inception, settings: dict, image_size: int,
                  t0: float) -> None:
    """Score the assembled activations against --reference; write OUT/scores.json."""
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    from var_jax.atomic import write_json
    from var_jax.evaluation.inception_weights import RELEASED_SHA256

    reference = (_reference(args, inception, settings["inception"], image_size)
                 if args.reference else None)
    scores = scores_of(acts, reference)
    payload = dict(scores, num_samples=len(acts["pool"]), settings=settings,
                   reference=args.reference, weights_fingerprint={
                       "var": settings["var"], "vae": settings["vae"],
                       "inception": settings["inception"],
                       "inception_is_released": settings["inception"].startswith(RELEASED_SHA256)},
                   seconds_this_run=time.perf_counter() - t0)
    path = os.path.join(args.out, "scores.json")
    write_json(path, payload)
    print("  ".join(f"{k} {v:.4g}" for k, v in scores.items() if isinstance(v, float)),
          flush=True)
    print(f"wrote {path}")


def run(args: argparse.Namespace) -> int:
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    import jax
    from jax.experimental import multihost_utils

    from var_jax.commands.options import (check_positive, enable_compile_cache,
                                          fast_sampling_kwargs, load_models)
    from var_jax.evaluation.features import inception_activations
    from var_jax.evaluation.fingerprint import path_fingerprint
    from var_jax.evaluation.inception_weights import load_inception
    from var_jax.evaluation.sample_set import (SAMPLES_FILE, SampleSet, assemble,
                                               check_settings, position_labels)
    from var_jax.image_io import to_uint8
    from var_jax.sampling import sample
    from var_jax.sharding import maybe_initialize_distributed

    check_positive("--batch-size", args.batch_size)
    if args.device_batch < 1:
        raise ValueError(f"--device-batch={args.device_batch} must be >= 1.")
    if args.per_class < 1:
        raise ValueError(f"--per-class={args.per_class} must be >= 1.")
    _check_reference(args)
    t0 = time.perf_counter()
    maybe_initialize_distributed()       # several hosts: detected from the environment
    enable_compile_cache(args.compile_cache)
    var_cfg, var_params, vae_cfg, vae_params = load_models(args.var, args.vae, args.patch_nums,
                                                           args.dtype)
    inception = fingerprint_inc = None
    if args.inception:
        inception, fingerprint_inc = load_inception(args.inception)
    settings = {
        "var": path_fingerprint(args.var), "vae": path_fingerprint(args.vae),
        "inception": fingerprint_inc, "protocol": args.protocol if args.inception else None,
        "num_classes": var_cfg.num_classes, "per_class": args.per_class, "seed": args.seed,
        "cfg": args.cfg, "top_k": args.top_k, "top_p": args.top_p,
        "more_smooth": args.more_smooth, "patch_nums": list(var_cfg.patch_nums),
        "device_batch": args.device_batch}
    if args.dtype != "float32":   # only then: float32 runs from before --dtype still match
        settings["dtype"] = args.dtype
    fast = fast_sampling_kwargs(args, var_cfg)
    if args.refiner is not None or fast["prune_scales"]:   # only then: old runs still match
        settings.update(refiner=args.refiner and path_fingerprint(args.refiner),
                        draft_scales=args.draft_scales, prune_ratio=args.prune_ratio,
                        prune_scales=fast["prune_scales"])
    os.makedirs(args.out, exist_ok=True)
    check_settings(args.out, settings)

    def sample_fn(labels, keys):
        return to_uint8(sample(var_params, vae_params, var_cfg, vae_cfg, labels, keys,
                                cfg=args.cfg, top_k=args.top_k, top_p=args.top_p,
                                more_smooth=args.more_smooth, **fast))

    features_fn = None
    if inception is not None:
        def features_fn(images):
            return inception_activations(inception, images, args.protocol)

    classes_N, index_N = position_labels(np.arange(var_cfg.num_classes), args.per_class)
    sample_set = SampleSet(args.out, classes_N, index_N, args.seed, sample_fn, features_fn)
    call = args.device_batch * jax.local_device_count()
    new = sample_set.generate(args.batch_size, call, jax.process_index(), jax.process_count(),
                              progress=not args.no_progress)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("var_jax evaluate: all samples saved")
    if jax.process_index() != 0:
        return 0
    acts = assemble(args.out, sample_set.num, inception is not None)
    print(f"wrote {sample_set.num} samples ({new} new this run) to "
          f"{os.path.join(args.out, SAMPLES_FILE)}", flush=True)
    if inception is None:
        return 0
    _write_scores(args, acts, inception, settings, vae_cfg.image_size, t0)
    return 0
