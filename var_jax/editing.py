"""Zero-shot editing (in/out-painting, class edits): sample only the masked tokens, one program."""
from __future__ import annotations

import functools
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.quant.resize import area_matrix
from var_jax.sampling import (SamplerOptions, check_options, compile_batched, decode_to_unit,
                              generate_fhat, pad_to_devices, per_image_keys, replicate)


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) float32: torch's F.interpolate mode="bilinear", align_corners=False, one axis."""
    m = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        src = max((i + 0.5) * in_size / out_size - 0.5, 0.0)
        i0 = min(int(np.floor(src)), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        frac = src - i0
        m[i, i0] += 1.0 - frac
        m[i, i1] += frac
    return m.astype(np.float32)


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


def _edit_program(var_params, vae_params, imgs_B, labels_B, keys_B, sample_masks, cfg_scale, *,
                  var_cfg, vae_cfg, opts):
    from var_jax.vqvae import VQVAE
    idx_list = VQVAE(vae_cfg).apply({"params": vae_params}, imgs_B * 2.0 - 1.0,
                                    method=VQVAE.encode_indices)
    keep_list = [jnp.logical_not(m) for m in sample_masks]
    f_hat, idx_BL = generate_fhat(var_params, vae_params, var_cfg, vae_cfg, labels_B, keys_B,
                                  cfg_scale, opts, forced=(idx_list, keep_list))
    return decode_to_unit(vae_params, vae_cfg, f_hat), idx_BL


@functools.lru_cache(maxsize=16)
def _compiled_editor(var_cfg: VARConfig, vae_cfg: VQVAEConfig, opts: SamplerOptions):
    program = functools.partial(_edit_program, var_cfg=var_cfg, vae_cfg=vae_cfg, opts=opts)
    return compile_batched(program, num_batched_in=4, num_batched_out=2)


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
    var_cfg.check_compatible(vae_cfg)
    labels_B = var_cfg.check_labels(labels)
    if labels_B.size == 0:
        raise ValueError("labels is empty; give one class id per image.")
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
    check_options(cfg, top_k, top_p, var_cfg.vocab_size)
    keys_B = per_image_keys(rng, B)
    opts = SamplerOptions(int(top_k), float(top_p), bool(more_smooth), bool(progress))
    fn, mesh = _compiled_editor(var_cfg, vae_cfg, opts)
    var_params, vae_params = replicate((var_params, vae_params))
    padded = pad_to_devices(mesh.size, jnp.asarray(imgs), jnp.asarray(labels_B), keys_B,
                            *[jnp.asarray(m) for m in masks])
    out_imgs, idx = fn(var_params, vae_params, *padded[:3], tuple(padded[3:]), jnp.float32(cfg))
    out_imgs, idx = out_imgs[:B], idx[:B]
    return (out_imgs, idx) if return_indices else out_imgs
