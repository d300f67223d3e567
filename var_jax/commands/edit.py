"""`var-jax edit`: zero-shot in-painting, out-painting and class-conditional editing."""
from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image, UnidentifiedImageError

from var_jax.commands.options import (add_model_arguments, check_positive, enable_compile_cache,
                                      load_models, say)

HELP = ("Regenerate part of an image with VAR (zero-shot): tokens outside the mask come from the "
        "image at every scale, tokens inside are sampled for the given class. Writes a PNG row: "
        "input, masked input, then the edits.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file (resized and centre-cropped to the model size)")
    parser.add_argument("--class", dest="label", type=int, required=True,
                        help="class id of the regenerated content")
    region = parser.add_mutually_exclusive_group(required=True)
    region.add_argument("--box", help="region to regenerate as fractions y0,x0,y1,x1, "
                                      "e.g. 0.25,0.25,0.75,0.75")
    region.add_argument("--mask", help="mask image: bright pixels are regenerated")
    parser.add_argument("--outpaint", action="store_true",
                        help="regenerate everything except the region instead")
    parser.add_argument("--num", type=int, default=4, help="edits to draw (different keys)")
    parser.add_argument("--no-keep-first", dest="keep_first", action="store_false",
                        help="also sample the 1x1 scale inside the mask (the reference keeps it)")
    parser.add_argument("--out", default="edit.png", help="PNG to write")
    add_model_arguments(parser)


def parse_box(box: str) -> tuple[float, float, float, float]:
    """"y0,x0,y1,x1" fractions of the image -> a checked tuple."""
    try:
        y0, x0, y1, x1 = (float(v) for v in box.split(","))
    except ValueError as e:
        raise ValueError(f"--box must be four fractions y0,x0,y1,x1, got {box!r}.") from e
    if not (0 <= y0 < y1 <= 1 and 0 <= x0 < x1 <= 1):
        raise ValueError(f"--box {box!r} needs 0 <= y0 < y1 <= 1 and 0 <= x0 < x1 <= 1.")
    return y0, x0, y1, x1


def box_mask(box: tuple[float, float, float, float], size: int):
    """(size, size) bool, True inside the box (fractions y0, x0, y1, x1)."""
    y0, x0, y1, x1 = box
    mask = np.zeros((size, size), bool)
    mask[round(y0 * size):round(y1 * size), round(x0 * size):round(x1 * size)] = True
    return mask


def check_same_aspect(image: str, mask: str) -> None:
    """The mask is resized and centre-cropped like the image: refuse another aspect ratio."""
    try:
        with Image.open(image) as a, Image.open(mask) as b:
            (wa, ha), (wb, hb) = a.size, b.size
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read {image} or the --mask {mask}: {e}") from e
    if abs(wa / ha - wb / hb) > 0.01:
        raise ValueError(f"--mask {mask} is {wb}x{hb} but the image {image} is {wa}x{ha}: "
                         "the mask would cover another region after the centre crop; give a "
                         "mask of the image's shape (or use --box).")


def run(args: argparse.Namespace) -> int:
    # local: `var-jax --help` and flag errors stay free of JAX and the models
    import jax

    from var_jax.commands.sample import check_classes, check_sampling
    from var_jax.editing import edit
    from var_jax.image_io import load_image, save_grid
    from var_jax.outputs import check_output_file

    check_output_file(args.out, "--out", image=True)
    if args.mask:
        check_same_aspect(args.image, args.mask)
    check_sampling(args)
    check_positive("--num", args.num)
    box = parse_box(args.box) if args.box else None
    enable_compile_cache(args.compile_cache)
    var_cfg, var_params, vae_cfg, vae_params = load_models(args.var, args.vae, args.patch_nums,
                                                           args.dtype)
    label, = check_classes([args.label], "--class", var_cfg.num_classes)
    size = vae_cfg.image_size
    img = (load_image(args.image, size) + 1.0) / 2.0
    if box:
        mask = box_mask(box, size)
    else:
        mask = load_image(args.mask, size).mean(-1) > 0.0
    if args.outpaint:
        mask = ~mask
    if not mask.any():
        raise ValueError(f"{'--box' if box else '--mask'} selects no pixels"
                         f"{' once --outpaint inverts it' if args.outpaint else ''}; "
                         "nothing to regenerate.")
    keys = jax.random.split(jax.random.key(args.seed), args.num)
    bs = min(args.batch_size, args.num)
    outs = []
    for start in range(0, args.num, bs):
        n = min(bs, args.num - start)
        idx = np.minimum(np.arange(start, start + bs), args.num - 1)   # one static batch shape
        say(f"edits {start + 1}-{start + n}/{args.num}"
            + (": compiling (first call only)..." if start == 0 else "..."))
        t = time.perf_counter()
        imgs = edit(var_params, vae_params, var_cfg, vae_cfg, np.repeat(img[None], bs, 0), mask,
                    np.full((bs,), label), rng=keys[idx], cfg=args.cfg, top_k=args.top_k,
                    top_p=args.top_p, more_smooth=args.more_smooth, keep_first=args.keep_first,
                    progress=True)
        outs.append(np.asarray(imgs)[:n])
        say(f"  {n} edits in {time.perf_counter() - t:.1f} s")
    shown = np.where(mask[..., None], 0.5, img)
    save_grid(args.out, np.concatenate([img[None], shown[None]] + outs), args.num + 2)
    print(f"wrote input, masked input and {args.num} edits to {args.out}")
    return 0
