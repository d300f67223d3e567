"""`var-jax reconstruct`: images -> tokens -> images, with the coarse-to-fine pyramid."""
from __future__ import annotations

import argparse
import os

HELP = ("Tokenize images with the VQ-VAE and decode them back: writes <name>_recon.png and "
        "<name>_pyramid.png (input, then the decode of the running f_hat after each scale).")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--weights", required=True,
                        help="tokenizer weights: vae_ch160v4096z32.pth or a `var-jax convert` dir")
    parser.add_argument("--resolution", type=int, choices=(256, 512), default=None,
                        help="scales of a .pth: the 256px or 512px preset (default 256)")
    parser.add_argument("--patch-nums", default=None,
                        help="custom scales of a .pth, comma separated (e.g. 1,2,3,4 for the "
                             "golden test tokenizer); the last one times 16 is the image size")
    parser.add_argument("--out-dir", default="reconstructions", help="output folder")
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


def load_image(path: str, size: int):
    """RGB float32 (size, size, 3) in [-1, 1]: shorter side resized to `size` (Lanczos), centre
    crop. Raises ValueError naming the file if it cannot be decoded."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from var_jax.data.augment import UnreadableImageError, to_rgb

    try:
        with Image.open(path) as im:
            im.load()
            im = to_rgb(im)
    except (UnidentifiedImageError, UnreadableImageError, OSError, SyntaxError,
            ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    w, h = im.size
    scale = size / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                   Image.Resampling.LANCZOS)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, np.float32) / 127.5 - 1.0


def load_tokenizer(path: str, resolution: int | None, patch_nums: str | None):
    """(VQVAEConfig, params) from a .pth (config read off its keys) or a converted directory."""
    from var_jax.configs import VQVAEConfig
    from var_jax.convert import (infer_config, load_converted, load_torch_state_dict,
                                 vqvae_params_from_torch)
    from var_jax.weights.store import is_converted_dir

    if is_converted_dir(path):
        if resolution or patch_nums:
            raise ValueError(f"{path} is a converted directory with its own config; drop "
                             "--resolution / --patch-nums.")
        cfg, params = load_converted(path)
    else:
        sd = load_torch_state_dict(path)
        pns = tuple(int(p) for p in patch_nums.split(",")) if patch_nums else None
        cfg = infer_config(sd, image_size=resolution, patch_nums=pns)
        params = vqvae_params_from_torch(sd, cfg) if isinstance(cfg, VQVAEConfig) else None
    if not isinstance(cfg, VQVAEConfig):
        raise ValueError(f"{path} holds a VAR transformer, not a tokenizer; pass "
                         "vae_ch160v4096z32.pth (or its converted directory) to --weights.")
    return cfg, params


def _to_uint8(x):
    import numpy as np

    return np.clip(np.round((np.asarray(x) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _output_stems(files: list[str]) -> list[str]:
    stems, seen = [], {}
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


def run(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from var_jax import atomic
    from var_jax.vqvae import VQVAE

    from var_jax.outputs import check_output_dir

    check_output_dir(args.out_dir, "--out-dir")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size={args.batch_size} must be >= 1.")
    files = list_images(args.images)
    cfg, params = load_tokenizer(args.weights, args.resolution, args.patch_nums)
    imgs = np.stack([load_image(f, cfg.image_size) for f in files])
    model = VQVAE(cfg)

    @jax.jit
    def reconstruct(params, imgs_BHW3):
        v = {"params": params}
        fhats = model.apply(v, model.apply(v, imgs_BHW3, method="encode_indices"),
                            method="indices_to_fhat")
        decode = lambda f_hat: model.apply(v, f_hat, method="decode_fhat")
        return jax.lax.map(decode, jnp.stack(fhats))  # (K, B, H, W, 3), one decoder compiled

    os.makedirs(args.out_dir, exist_ok=True)
    stems, bs = _output_stems(files), args.batch_size
    for start in range(0, len(files), bs):
        batch = imgs[start:start + bs]
        padded = np.concatenate([batch, np.zeros((bs - len(batch),) + batch.shape[1:],
                                                 batch.dtype)])  # one static shape
        per_scale = np.asarray(reconstruct(params, jnp.asarray(padded)))[:, :len(batch)]
        for i, stem in enumerate(stems[start:start + len(batch)]):
            recon, original = _to_uint8(per_scale[-1, i]), _to_uint8(batch[i])
            mse = np.mean((recon.astype(np.float64) - original) ** 2)
            psnr = 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))
            pyramid = np.concatenate([original] + [_to_uint8(x) for x in per_scale[:, i]], 1)
            recon_path = os.path.join(args.out_dir, f"{stem}_recon.png")
            pyramid_path = os.path.join(args.out_dir, f"{stem}_pyramid.png")
            atomic.write_image(recon_path, recon)
            atomic.write_image(pyramid_path, pyramid)
            print(f"{files[start + i]}: PSNR {psnr:.2f} dB -> {recon_path}, {pyramid_path}")
    return 0
