"""Flags and checks the commands share: one flag name per concept, old spellings hidden."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from var_jax.configs import COMPUTE_DTYPES

DEFAULT_COMPILE_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "var_jax", "xla")
WEIGHTS_FORMS = "a .pth, a `var-jax convert`/`export` dir or a `var-jax train` work dir"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" on every option that has a default (not on required ones)."""

    def _get_help_string(self, action):
        if action.required or action.default in (None, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def add_hidden_alias(parser: argparse.ArgumentParser, old: str, dest: str, **kwargs) -> None:
    """Accept `old` (a spelling that shipped) for `dest` without listing it in --help."""
    parser.add_argument(old, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                        **kwargs)


def check_positive(flag: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{flag}={value} must be >= 1.")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Weights and sampling options of `sample` and `edit`."""
    parser.add_argument("--var", required=True,
                        help=f"transformer weights (e.g. var_d16.pth): {WEIGHTS_FORMS}")
    parser.add_argument("--vae", required=True,
                        help=f"tokenizer weights (e.g. vae_ch160v4096z32.pth): {WEIGHTS_FORMS}")
    parser.add_argument("--patch-nums", default=None,
                        help="scales of a .pth transformer trained on custom scales, comma "
                             "separated (e.g. 1,2,3,4); the released ones are read off the "
                             "checkpoint")
    parser.add_argument("--cfg", type=float, default=1.5, help="classifier-free guidance")
    parser.add_argument("--top-k", type=int, default=900, help="top-k filter (0: off)")
    parser.add_argument("--top-p", type=float, default=0.96, help="top-p filter (0: off)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    parser.add_argument("--more-smooth", action="store_true",
                        help="gumbel-softmax codes: smoother images (not for FID)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per compiled call")
    add_hidden_alias(parser, "--batch", "batch_size", type=int)
    parser.add_argument("--dtype", default="float32", choices=COMPUTE_DTYPES,
                        help="compute dtype of the transformer blocks (also of --refiner); "
                             "logits, filter and draws stay float32. bfloat16 is the native "
                             "matmul dtype of TPUs and GPUs and measured faster on CPUs with "
                             "AMX; its tokens can differ from float32's (README, 'bf16 on CPU')")
    parser.add_argument("--compile-cache", default=DEFAULT_COMPILE_CACHE,
                        help="folder of JAX's persistent compilation cache, so later runs skip "
                             "the compile ('' turns it off)")


def add_fast_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """Faster sampling beyond the paper (var_jax/fast_sampling.py); off by default."""
    parser.add_argument("--refiner", default=None,
                        help="draft-and-refine: a smaller transformer on the same tokenizer "
                             f"({WEIGHTS_FORMS}) samples the scales after --draft-scales; "
                             "trades fidelity of the fine scales for speed")
    parser.add_argument("--draft-scales", type=int, default=None,
                        help="with --refiner: scales the --var model samples first (e.g. 8 of "
                             "10); fewer is faster and further from the --var model's samples")
    parser.add_argument("--prune-ratio", type=float, default=0.0,
                        help="token pruning: at the last --prune-scales scales only the "
                             "(1 - ratio) tokens farthest from the scale's mean run through "
                             "the blocks, the rest copy the upsampled previous scale; trades "
                             "detail for speed (0: off)")
    parser.add_argument("--prune-scales", type=int, default=2,
                        help="how many of the largest scales --prune-ratio prunes; more is "
                             "faster and loses more detail")


def fast_sampling_kwargs(args: argparse.Namespace, var_cfg) -> dict:
    """`sampling.sample` keyword arguments of the fast-sampling flags (the refiner loaded)."""
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    from var_jax.convert import load_weights
    from var_jax.fast_sampling import check_fast_options
    from var_jax.sharding import replicate

    if args.draft_scales is not None and args.refiner is None:
        raise ValueError("--draft-scales needs --refiner PATH (the model for the later scales).")
    if args.refiner is not None and args.draft_scales is None:
        raise ValueError("--refiner needs --draft-scales N: how many scales --var samples first.")
    prune_scales = args.prune_scales if args.prune_ratio > 0 else 0
    kwargs = dict(prune_ratio=args.prune_ratio, prune_scales=prune_scales)
    if args.refiner is None:
        check_fast_options(var_cfg, None, None, args.prune_ratio, prune_scales)
        return kwargs
    refiner_cfg, refiner_params = load_weights(args.refiner, "var", var_cfg.patch_nums,
                                               flag="--refiner")
    refiner_cfg = dataclasses.replace(refiner_cfg, dtype=var_cfg.dtype)
    check_fast_options(var_cfg, refiner_cfg, args.draft_scales, args.prune_ratio, prune_scales)
    return dict(kwargs, refiner=(replicate(refiner_params), refiner_cfg),
                draft_scales=args.draft_scales)


def enable_compile_cache(path: str) -> None:
    """Turn on JAX's persistent compilation cache in `path` (no-op for '')."""
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    import jax

    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def load_models(var_path: str, vae_path: str, patch_nums: str | tuple[int, ...] | None = None,
                dtype: str = "float32"):
    """(var_cfg, var_params, vae_cfg, vae_params) on the devices, the transformer computing in
    `dtype`; the tokenizer takes the transformer's scales (a converted tokenizer must have been
    converted with them)."""
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    from var_jax.convert import load_weights, parse_patch_nums
    from var_jax.sharding import replicate

    pns = parse_patch_nums(patch_nums) if isinstance(patch_nums, str) else patch_nums
    var_cfg, var_params = load_weights(var_path, "var", pns, flag="--var")
    var_cfg = dataclasses.replace(var_cfg, dtype=dtype)
    try:
        vae_cfg, vae_params = load_weights(vae_path, "vae", var_cfg.patch_nums, flag="--vae")
    except ValueError as e:
        if "scales" not in str(e):
            raise
        scales = ",".join(str(p) for p in var_cfg.patch_nums)
        raise ValueError(
            f"the tokenizer --vae {vae_path} was converted for other scales than the transformer "
            f"--var {var_path} uses ({scales}); re-convert the tokenizer with `var-jax convert "
            f"vae_ch160v4096z32.pth OUT_DIR --patch-nums {scales}` and pass OUT_DIR to --vae (or "
            "pass the .pth itself).") from e
    if (var_cfg.vocab_size, var_cfg.vae_channels) != (vae_cfg.vocab_size, vae_cfg.z_channels):
        raise ValueError(
            f"--var {var_path} predicts {var_cfg.vocab_size} codes of width "
            f"{var_cfg.vae_channels}, but --vae {vae_path} has {vae_cfg.vocab_size} codes of width "
            f"{vae_cfg.z_channels}; pass the tokenizer the transformer was trained with.")
    var_params, vae_params = replicate((var_params, vae_params))   # one host->device copy
    return var_cfg, var_params, vae_cfg, vae_params


def say(text: str) -> None:
    """A progress line on stderr (stdout keeps the results)."""
    print(text, file=sys.stderr, flush=True)
