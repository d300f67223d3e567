"""`var-jax convert`: a released .pth -> an Orbax params checkpoint plus its config."""
from __future__ import annotations

import argparse
import os

HELP = ("Convert released PyTorch weights (.pth) to a var_jax weights directory (Orbax params + "
        "config.json, which records the scales).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="path to e.g. vae_ch160v4096z32.pth or var_d16.pth")
    parser.add_argument("out_dir", help="new directory to write (params/ and config.json)")
    parser.add_argument("--image-size", type=int, default=None, choices=(256, 512),
                        help="a tokenizer's scales (its .pth does not store them): the released "
                             "256 px ones, or 512 px for var_d36; give this or --patch-nums")
    parser.add_argument("--patch-nums", type=str, default=None,
                        help="custom scales, comma separated, e.g. 1,2,3,4")


def run(args: argparse.Namespace) -> int:
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    from var_jax.configs import VQVAEConfig
    from var_jax.convert import (infer_config, parse_patch_nums, read_state_dict, save_converted,
                                 var_params_from_torch, vqvae_params_from_torch)
    from var_jax.outputs import check_output_dir

    check_output_dir(args.out_dir, "OUT_DIR", empty=True)
    patch_nums = parse_patch_nums(args.patch_nums)
    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f"CHECKPOINT {args.checkpoint}: no such file; pass a released "
                                ".pth such as vae_ch160v4096z32.pth or var_d16.pth.")
    sd = read_state_dict(args.checkpoint)
    cfg = infer_config(sd, image_size=args.image_size, patch_nums=patch_nums)
    convert = vqvae_params_from_torch if isinstance(cfg, VQVAEConfig) else var_params_from_torch
    params = convert(sd, cfg)
    out = save_converted(args.out_dir, cfg, params)
    n = sum(int(v.size) for v in sd.values())
    print(f"converted {args.checkpoint} ({len(sd)} tensors, {n / 1e6:.1f}M values) -> {out}")
    print(f"config: {cfg}")
    return 0
