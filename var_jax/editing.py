"""Zero-shot editing (in/out-painting, class edits): sample only the masked tokens, one program."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.data.augment import bilinear_matrix
from var_jax.quant.resize import area_matrix
from var_jax.sampling import SamplerOptions, run_sampler


def scale_masks(mask, patch_nums: Sequence[int], keep_first: bool = True) -> list[np.ndarray]:
    """Per-scale "sample here" masks (B, pn*pn) bool from a (B, h, w) or (h, w) bool mask.

    True in `mask` marks the region to regenerate. As the reference's editing demo: the keep
    mask is area-averaged to the finest token grid, bilinearly resized to each scale, and a
    token keeps the image's code where the result is > 0.5. keep_first: also keep the image's
    tokens on scales of <= 3 tokens (the reference always does; False lets a full mask
    reduce to plain sampling).
    """
    arr = np.asarray(mask)
    if arr.dtype != np.bool_ or arr.ndim not in (2, 3):
        raise ValueError(f"mask must be a bool array (B, h, w) or (h, w) with True where tokens "
                         f"are regenerated; got dtype {arr.dtype} shape {arr.shape}.")
    keep = (~arr if arr.ndim == 3 else ~arr[None]).astype(np.float32)
    n = patch_nums[-1]
    ah, aw = area_matrix(keep.shape[1], n), area_matrix(keep.shape[2], n)
    keep_nn = np.einsum("ih,bhw,jw->bij", ah, keep, aw)
    out = []
    for pn in patch_nums:
        b = bilinear_matrix(n, pn)
        keep_pp = np.einsum("ih,bhw,jw->bij", b, keep_nn, b) > 0.5
        if keep_first and pn * pn <= 3:
            keep_pp[:] = True
        out.append(~keep_pp.reshape(keep_pp.shape[0], pn * pn))
    return out


def edit(var_params, vae_params, var_cfg: VARConfig, vae_cfg: VQVAEConfig, images, mask, labels,
         rng, cfg: float = 1.5, top_k: int = 900, top_p: float = 0.96, more_smooth: bool = False,
         keep_first: bool = True, return_indices: bool = False, progress: bool = False):
    """Regenerate the masked part of `images` as class `labels`; returns imgs [, idx] as `sample`.

    images: (B, H, W, 3) float in [0, 1]. mask: bool (B, h, w) or (h, w), True = regenerate
    (any resolution, e.g. pixels or the finest token grid), or a list of per-scale (B, pn*pn)
    bool "sample here" masks. At every scale the image's own tokens are used outside the mask
    (so the KV cache and f_hat see them) and only masked tokens are sampled. progress: print a
    line per scale.
    """
    labels_B = var_cfg.check_labels(labels)
    imgs = np.asarray(images, np.float32)
    size = vae_cfg.image_size
    if imgs.ndim != 4 or imgs.shape[1:] != (size, size, 3) or imgs.shape[0] != labels_B.size:
        raise ValueError(f"images must be (B, {size}, {size}, 3) with B = len(labels) = "
                         f"{labels_B.size}; got {imgs.shape}.")
    if imgs.size and (imgs.min() < 0.0 or imgs.max() > 1.0):
        raise ValueError("images must be in [0, 1] (as `sample` returns them); got values in "
                         f"[{imgs.min():.3g}, {imgs.max():.3g}].")
    B = labels_B.size
    if isinstance(mask, (list, tuple)):
        masks = [np.asarray(m, bool) for m in mask]
        want = [(B, pn * pn) for pn in var_cfg.patch_nums]
        if [m.shape for m in masks] != want:
            raise ValueError(f"per-scale masks must have shapes {want}; got "
                             f"{[m.shape for m in masks]}.")
    else:
        masks = scale_masks(mask, var_cfg.patch_nums, keep_first)
        masks = [np.broadcast_to(m, (B, m.shape[1])) for m in masks]
    opts = SamplerOptions(int(top_k), float(top_p), bool(more_smooth), bool(progress))
    out_imgs, idx = run_sampler(var_params, vae_params, var_cfg, vae_cfg, labels_B, rng, cfg,
                                opts, edit_B=(imgs, masks))
    return (out_imgs, idx) if return_indices else out_imgs
