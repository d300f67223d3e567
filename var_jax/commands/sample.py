"""`var-jax sample`: class ids in, a PNG grid of generated images out."""
from __future__ import annotations

import argparse
import os
import time

DEFAULT_COMPILE_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "var_jax", "xla")
HELP = ("Generate class-conditional images with a VAR transformer and the VQ-VAE tokenizer "
        "(released .pth files or `var-jax convert` directories); writes a PNG grid.")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Weights and sampling options shared by `sample` and `edit`."""
    parser.add_argument("--var", required=True,
                        help="transformer weights: var_d16.pth ... var_d36.pth or a converted dir")
    parser.add_argument("--vae", required=True,
                        help="tokenizer weights: vae_ch160v4096z32.pth or a converted dir")
    parser.add_argument("--patch-nums", default=None,
                        help="custom scales of a .pth transformer, comma separated (e.g. 1,2,3,4); "
                             "the released ones are read off the checkpoint")
    parser.add_argument("--cfg", type=float, default=1.5, help="classifier-free guidance")
    parser.add_argument("--top-k", type=int, default=900, help="top-k filter (0: off)")
    parser.add_argument("--top-p", type=float, default=0.96, help="top-p filter (0: off)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    parser.add_argument("--more-smooth", action="store_true",
                        help="gumbel-softmax codes: smoother images (not for FID)")
    parser.add_argument("--batch", type=int, default=16, help="images per compiled call")
    parser.add_argument("--compile-cache", default=DEFAULT_COMPILE_CACHE,
                        help="folder of JAX's persistent compilation cache, so later runs skip "
                             "the compile ('' turns it off)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", required=True,
                        help="class ids, comma separated, e.g. 207,360,387,974,88")
    parser.add_argument("--per-class", type=int, default=1, help="images per class id")
    parser.add_argument("--out", default="samples.png", help="PNG grid to write")
    parser.add_argument("--nrow", type=int, default=8, help="images per grid row")
    add_model_arguments(parser)


def load_models(var_path: str, vae_path: str, patch_nums: str | None = None):
    """(var_cfg, var_params, vae_cfg, vae_params); the tokenizer takes the transformer's scales."""
    from var_jax.configs import VARConfig, VQVAEConfig
    from var_jax.convert import (infer_config, load_converted, load_torch_state_dict,
                                 var_params_from_torch, vqvae_params_from_torch)
    from var_jax.sampling import replicate
    from var_jax.weights.store import is_converted_dir

    pns = tuple(int(p) for p in patch_nums.split(",")) if patch_nums else None

    def load(path, want, convert, **infer):
        if is_converted_dir(path):
            cfg, params = load_converted(path)
        else:
            sd = load_torch_state_dict(path)
            cfg = infer_config(sd, **infer)
            params = convert(sd, cfg) if isinstance(cfg, want) else None
        if not isinstance(cfg, want):
            raise ValueError(f"{path} holds a {type(cfg).__name__}, not a {want.__name__}; check "
                             "the order of --var and --vae.")
        return cfg, params

    var_cfg, var_params = load(var_path, VARConfig, var_params_from_torch, patch_nums=pns)
    vae_cfg, vae_params = load(vae_path, VQVAEConfig, vqvae_params_from_torch,
                               patch_nums=var_cfg.patch_nums)
    var_cfg.check_compatible(vae_cfg)
    var_params, vae_params = replicate((var_params, vae_params))   # one host->device copy
    return var_cfg, var_params, vae_cfg, vae_params


def check_batch(batch: int) -> None:
    if batch < 1:
        raise ValueError(f"--batch={batch} must be >= 1.")


def enable_compile_cache(path: str) -> None:
    """Turn on JAX's persistent compilation cache in `path` (no-op for '')."""
    import jax

    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def save_grid(imgs_BHW3, path: str, nrow: int) -> None:
    """Images in [0, 1] -> one PNG, `nrow` per row, 2-pixel white gaps."""
    import numpy as np

    from var_jax import atomic

    imgs = np.clip(np.round(np.asarray(imgs_BHW3) * 255.0), 0, 255).astype(np.uint8)
    B, H, W, _ = imgs.shape
    cols = max(1, min(nrow, B))
    rows = -(-B // cols)
    gap = 2
    grid = np.full((rows * (H + gap) - gap, cols * (W + gap) - gap, 3), 255, np.uint8)
    for i, img in enumerate(imgs):
        r, c = divmod(i, cols)
        grid[r * (H + gap):r * (H + gap) + H, c * (W + gap):c * (W + gap) + W] = img
    atomic.write_image(path, grid)


def run(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from var_jax.outputs import check_output_file
    from var_jax.sampling import sample

    check_output_file(args.out, "--out", image=True)
    check_batch(args.batch)
    if args.per_class < 1:
        raise ValueError(f"--per-class={args.per_class} must be >= 1.")
    try:
        classes = [int(c) for c in args.classes.split(",") if c.strip()]
    except ValueError as e:
        raise ValueError(f"--classes must be comma separated integers, got {args.classes!r}."
                         ) from e
    if not classes:
        raise ValueError(f"--classes {args.classes!r} names no class ids; give at least one, "
                         "e.g. --classes 207,360.")
    enable_compile_cache(args.compile_cache)
    var_cfg, var_params, vae_cfg, vae_params = load_models(args.var, args.vae, args.patch_nums)
    labels = var_cfg.check_labels(np.repeat(classes, args.per_class))
    keys = jax.random.split(jax.random.key(args.seed), labels.size)   # independent of --batch
    bs = min(args.batch, labels.size)
    chunks = []
    for start in range(0, labels.size, bs):
        n = min(bs, labels.size - start)
        idx = np.minimum(np.arange(start, start + bs), labels.size - 1)   # one static shape
        lab = labels[idx]
        print(f"batch {start // bs + 1}/{-(-labels.size // bs)}: {n} images "
              f"(classes {sorted(set(lab[:n].tolist()))})", flush=True)
        t = time.perf_counter()
        imgs = sample(var_params, vae_params, var_cfg, vae_cfg, lab, rng=keys[idx], cfg=args.cfg,
                      top_k=args.top_k, top_p=args.top_p, more_smooth=args.more_smooth,
                      progress=bs >= 8)
        chunks.append(np.asarray(imgs)[:n])
        print(f"  {n} images in {time.perf_counter() - t:.1f} s", flush=True)
    save_grid(np.concatenate(chunks), args.out, args.nrow)
    print(f"wrote {labels.size} images to {args.out}")
    return 0
