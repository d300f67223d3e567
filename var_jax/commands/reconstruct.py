"""`var-jax reconstruct`: images -> tokens -> images, with the coarse-to-fine pyramid."""
from __future__ import annotations

import argparse
import os

import numpy as np

from var_jax.commands.options import WEIGHTS_FORMS, add_hidden_alias, check_positive, say

HELP = ("Tokenize images with the VQ-VAE and decode them back: writes <name>_recon.png and "
        "<name>_pyramid.png (input, then the decode of the running f_hat after each scale).")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--vae", default=None,
                        help=f"tokenizer weights, required (e.g. vae_ch160v4096z32.pth): "
                             f"{WEIGHTS_FORMS}")
    add_hidden_alias(parser, "--weights", "vae")
    parser.add_argument("--image-size", type=int, choices=(256, 512), default=None,
                        help="scales of a .pth tokenizer: the released 256 or 512 px ones (a .pth "
                             "does not store them; give this or --patch-nums)")
    add_hidden_alias(parser, "--resolution", "image_size", type=int, choices=(256, 512))
    parser.add_argument("--patch-nums", default=None,
                        help="custom scales of a .pth tokenizer, comma separated (e.g. 1,2,3,4 for "
                             "the golden test tokenizer); the last one times 16 is the image size")
    parser.add_argument("--out", default="reconstructions", help="output folder")
    add_hidden_alias(parser, "--out-dir", "out")
    parser.add_argument("--batch-size", type=int, default=4, help="images per device batch")


def list_images(paths: list[str]) -> list[str]:
    """Files as given, folders expanded to their image files (sorted, not recursive)."""
    out = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, n) for n in os.listdir(path)
                           if n.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise ValueError(f"folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
            out.extend(found)
        elif os.path.isfile(path):
            out.append(path)
        else:
            raise FileNotFoundError(f"no such image file or folder: {path}")
    return out


def load_tokenizer(args: argparse.Namespace):
    """(VQVAEConfig, params) of --vae; --image-size / --patch-nums only for a .pth."""
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    from var_jax.convert import load_weights, parse_patch_nums

    if args.vae is None:
        raise ValueError(f"give the tokenizer with --vae ({WEIGHTS_FORMS}).")
    pns = parse_patch_nums(args.patch_nums)
    if os.path.isdir(args.vae) and args.image_size:
        raise ValueError(f"--vae {args.vae} is a directory with its own config; drop "
                         "--image-size.")
    return load_weights(args.vae, "vae", pns, image_size=args.image_size, flag="--vae")


def _output_stems(files: list[str]) -> list[str]:
    stems, seen = [], {}
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


def run(args: argparse.Namespace) -> int:
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    import jax

    from var_jax.image_io import load_image, save_grid, to_uint8
    from var_jax.outputs import check_output_dir
    from var_jax.vqvae import VQVAE

    check_output_dir(args.out, "--out")
    check_positive("--batch-size", args.batch_size)
    files = list_images(args.images)
    cfg, params = load_tokenizer(args)
    imgs = np.stack([load_image(f, cfg.image_size) for f in files])
    model = VQVAE(cfg)

    @jax.jit
    def reconstruct(params, imgs_BHW3):   # (K, B, H, W, 3) in [-1, 1]
        v = {"params": params}
        return model.apply(v, model.apply(v, imgs_BHW3, method=VQVAE.encode_indices),
                           method=VQVAE.decode_per_scale)

    os.makedirs(args.out, exist_ok=True)
    stems, bs = _output_stems(files), args.batch_size
    for start in range(0, len(files), bs):
        batch = imgs[start:start + bs]
        if start == 0:
            say(f"{len(files)} images, {bs} per call; compiling (first call only)...")
        padded = np.concatenate([batch, np.zeros((bs - len(batch),) + batch.shape[1:],
                                                 batch.dtype)])  # one static shape
        per_scale = to_uint8(reconstruct(params, padded)[:, :len(batch)], low=-1.0)
        for i, stem in enumerate(stems[start:start + len(batch)]):
            recon, original = per_scale[-1, i], to_uint8(batch[i], low=-1.0)
            mse = np.mean((recon.astype(np.float64) - original) ** 2)
            psnr = 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))
            recon_path = os.path.join(args.out, f"{stem}_recon.png")
            pyramid_path = os.path.join(args.out, f"{stem}_pyramid.png")
            save_grid(recon_path, recon[None], cols=1)
            save_grid(pyramid_path, np.concatenate([original[None], per_scale[:, i]]),
                      cols=len(per_scale) + 1)
            print(f"[{start + i + 1}/{len(files)}] {files[start + i]}: PSNR {psnr:.2f} dB -> "
                  f"{recon_path}, {pyramid_path}")
    return 0
