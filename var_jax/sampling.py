"""Class-conditional sampling as ONE jitted program: static KV cache, CFG, top-k/p, decode."""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from var_jax import sharding
from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.fast_sampling import (Refiner, cache_begins, check_fast_options, kept_counts,
                                   prefill, run_scale)
from var_jax.token_filter import filter_logits, sample_categorical
from var_jax.var import VAR, init_kv_cache
from var_jax.vqvae import VQVAE


class SamplerOptions(NamedTuple):
    """Static options of one compiled sampler (part of its cache key)."""

    top_k: int = 900
    top_p: float = 0.96
    more_smooth: bool = False
    progress: bool = False
    draft_scales: int | None = None   # with a refiner: scales the drafter samples (fast_sampling)
    prune_ratio: float = 0.0          # token pruning at the last prune_scales scales
    prune_scales: int = 0


# ---------------------------------------------------------------------------- token choice
def gumbel_softmax(key, logits, tau: float):
    """Soft gumbel-softmax weights softmax((logits + g) / tau) over the last axis."""
    g = jax.random.gumbel(key, logits.shape, jnp.float32)
    return jax.nn.softmax((logits + g) / tau, axis=-1)


def guidance(cfg_scale, si: int, num_scales: int):
    """t = cfg * si / (K - 1): guidance grows linearly from 0 at the first scale to cfg."""
    return cfg_scale * (si / max(num_scales - 1, 1))


# ---------------------------------------------------------------------------- the scale loop
def generate_fhat(var_params, vae_params, var_cfg: VARConfig, vae_cfg: VQVAEConfig, labels_B,
                  keys_B, cfg_scale, opts: SamplerOptions, forced=None,
                  refiner: Refiner | None = None):
    """Coarse-to-fine generation (traceable); returns (f_hat_BhwC, idx_BL).

    keys_B: one PRNG key per image; scale si uses fold_in(key, si), so images are independent
    of the batch they are in. forced: optional (idx_list, keep_list) of per-scale (B, pn*pn)
    token ids and bools; where keep is True the given token is used instead of a sample
    (zero-shot editing). The doubled CFG batch is interleaved (cond_0, null_0, cond_1, ...)
    so that a batch-sharded layout keeps each image's pair on one device.
    refiner and opts.draft_scales / prune_ratio / prune_scales: var_jax/fast_sampling.py.
    """
    refiner_cfg = None if refiner is None else refiner.cfg
    N = check_fast_options(var_cfg, refiner_cfg, opts.draft_scales, opts.prune_ratio,
                           opts.prune_scales)
    keeps = kept_counts(var_cfg.patch_nums, opts.prune_ratio, opts.prune_scales)
    begins = cache_begins(keeps)
    model, vae = VAR(var_cfg), VQVAE(vae_cfg)
    vp, qp = {"params": var_params}, {"params": vae_params}
    B, K, V = labels_B.shape[0], var_cfg.num_scales, var_cfg.vocab_size
    labels_2B = jnp.stack([labels_B, jnp.full_like(labels_B, var_cfg.num_classes)], 1).reshape(-1)
    cond_BD, cond_blocks = model.apply(vp, labels_2B, method=VAR.conditioning)
    x_BlC = model.apply(vp, cond_BD, method=VAR.embed_first)
    kv_caches = init_kv_cache(var_cfg, 2 * B)
    codebook_VC = jnp.asarray(vae.apply(qp, method=VQVAE.codebook), jnp.float32)
    last = var_cfg.patch_nums[-1]
    f_hat = jnp.zeros((B, last, last, var_cfg.vae_channels), jnp.float32)
    idx_list, next_inputs, h_BlC = [], [], None
    for si, pn in enumerate(var_cfg.patch_nums):
        if si == N:   # hand over to the refiner: prefill its cache with the drafted scales
            model, vp = VAR(refiner.cfg), {"params": refiner.params}
            cond_BD, cond_blocks = model.apply(vp, labels_2B, method=VAR.conditioning)
            h_BlC, kv_caches = prefill(model, vp, cond_BD, cond_blocks, next_inputs,
                                       init_kv_cache(refiner.cfg, 2 * B), N)
            x_BlC = jnp.repeat(model.apply(vp, si, next_inputs[-1], method=VAR.embed_scale), 2, 0)
        ratio = si / max(K - 1, 1)
        h_BlC, kv_caches = run_scale(model, vp, x_BlC, cond_blocks, kv_caches, keep=keeps[si],
                                     cache_begin=begins[si], h_prev_BpC=h_BlC)
        logits_2BlV = model.apply(vp, h_BlC, cond_BD, method=VAR.logits)
        logits_B2lV = logits_2BlV.reshape(B, 2, pn * pn, V)
        t = guidance(cfg_scale, si, K)
        logits_BlV = (1 + t) * logits_B2lV[:, 0] - t * logits_B2lV[:, 1]
        logits_BlV = filter_logits(logits_BlV, opts.top_k, opts.top_p)
        step_keys = jax.vmap(jax.random.split)(jax.vmap(jax.random.fold_in, (0, None))(keys_B, si))
        u_Bl = jax.vmap(lambda k: jax.random.uniform(k, (pn * pn,)))(step_keys[:, 0])
        idx_Bl = sample_categorical(u_Bl.reshape(-1), logits_BlV.reshape(-1, V)).reshape(B, -1)
        if forced is not None:
            idx_Bl = jnp.where(forced[1][si], forced[0][si], idx_Bl)
        h_code_BlC = codebook_VC[idx_Bl]
        if opts.more_smooth:
            tau = max(0.27 * (1 - 0.95 * ratio), 0.005)
            w_BlV = jax.vmap(gumbel_softmax, (0, 0, None))(step_keys[:, 1],
                                                            logits_BlV * (1 + ratio), tau)
            soft_BlC = jnp.einsum("blv,vc->blc", w_BlV, codebook_VC)
            h_code_BlC = soft_BlC if forced is None else jnp.where(forced[1][si][..., None],
                                                                   h_code_BlC, soft_BlC)
        f_hat, next_BlCv = vae.apply(qp, si, f_hat, h_code_BlC, method=VQVAE.next_scale_input)
        idx_list.append(idx_Bl)
        next_inputs.append(next_BlCv)
        if opts.progress:
            jax.debug.callback(functools.partial(_report_scale, si, K, pn), idx_Bl[0, 0])
        if si + 1 < K and si + 1 != N:
            x_BlC = jnp.repeat(model.apply(vp, si + 1, next_BlCv, method=VAR.embed_scale), 2, 0)
    return f_hat, jnp.concatenate(idx_list, axis=1)


def _report_scale(si: int, num_scales: int, pn: int, _token) -> None:
    print(f"  scale {si + 1}/{num_scales} ({pn}x{pn}) done", flush=True)


def decode_to_unit(vae_params, vae_cfg: VQVAEConfig, f_hat_BhwC):
    """Decode f_hat to images in [0, 1] (the decoder output is clamped to [-1, 1])."""
    imgs = VQVAE(vae_cfg).apply({"params": vae_params}, f_hat_BhwC, method=VQVAE.decode_fhat)
    return (imgs.astype(jnp.float32) + 1.0) * 0.5


def _program(models_params, vae_params, labels_B, key_data_B, edit_B, cfg_scale, *, var_cfg,
             vae_cfg, opts, refiner_cfg):
    """The one sampler program: (images (B, H, W, 3) in [0, 1], idx_BL). models_params:
    (var_params, refiner params or None). edit_B: None, or (images (B, H, W, 3) in [0, 1],
    per-scale (B, pn*pn) "sample here" masks) whose tokens are kept outside the masks."""
    var_params, refiner_params = models_params
    refiner = None if refiner_cfg is None else Refiner(refiner_params, refiner_cfg)
    forced = None
    if edit_B is not None:
        imgs_B, sample_masks = edit_B
        idx_list = VQVAE(vae_cfg).apply({"params": vae_params}, imgs_B * 2.0 - 1.0,
                                        method=VQVAE.encode_indices)
        forced = (idx_list, [jnp.logical_not(m) for m in sample_masks])
    f_hat, idx_BL = generate_fhat(var_params, vae_params, var_cfg, vae_cfg, labels_B,
                                  jax.random.wrap_key_data(key_data_B), cfg_scale, opts, forced,
                                  refiner=refiner)
    return decode_to_unit(vae_params, vae_cfg, f_hat), idx_BL


@functools.lru_cache(maxsize=32)
def compiled_sampler(var_cfg: VARConfig, vae_cfg: VQVAEConfig, opts: SamplerOptions,
                     spread: bool = True, refiner_cfg: VARConfig | None = None):
    """(jitted `_program`, mesh or None). spread: batch split over the local devices, params
    replicated (`sample`, `edit`); False: compiled for whatever shardings the params have
    (the trainer's FSDP params), inputs replicated."""
    program = functools.partial(_program, var_cfg=var_cfg, vae_cfg=vae_cfg, opts=opts,
                                refiner_cfg=refiner_cfg)
    if not spread:
        return jax.jit(program), None
    return sharding.compile_batched(program, num_batched_in=3, num_batched_out=2)


def per_image_keys(rng, batch: int):
    """One key per image: split(rng, B) for a single key, or the given (B,) keys as they are."""
    if not isinstance(rng, jax.Array) or not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        raw = jnp.asarray(rng)
        if raw.dtype != jnp.uint32 or raw.shape[-1:] != (2,):
            raise ValueError(f"rng must be a jax.random.key, or raw uint32 key data of shape (2,) "
                             f"or (B, 2); got dtype {raw.dtype} shape {raw.shape}.")
        rng = jax.random.wrap_key_data(raw)
    if rng.ndim == 0:
        return jax.random.split(rng, batch)
    if rng.shape != (batch,):
        raise ValueError(f"rng holds keys of shape {rng.shape}; pass one key, or one per image "
                         f"({batch},).")
    return rng


def check_options(cfg: float, top_k: int, top_p: float, vocab_size: int) -> None:
    if not np.isfinite(cfg):
        raise ValueError(f"cfg={cfg} must be a finite number (1.5 is the paper's FID setting).")
    if int(top_k) != top_k or top_k < 0:
        raise ValueError(f"top_k={top_k} must be an int >= 0 (0 disables it; V={vocab_size}).")
    if not 0.0 <= top_p < 1.0:
        raise ValueError(f"top_p={top_p} must be in [0, 1) (0 disables it).")


def run_sampler(var_params, vae_params, var_cfg: VARConfig, vae_cfg: VQVAEConfig, labels, rng,
                cfg: float, opts: SamplerOptions, edit_B=None, spread: bool = True,
                refiner: Refiner | None = None):
    """Validate, one key per image, pad the batch to the devices, run `compiled_sampler`,
    unpad: (images (B, H, W, 3) float32 in [0, 1], idx (B, L) int32). The inputs go in as
    host numpy arrays, so they enter the program the same on every host."""
    var_cfg.check_compatible(vae_cfg)
    labels_B = var_cfg.check_labels(labels)
    if labels_B.size == 0:
        raise ValueError("labels is empty; give at least one class id.")
    check_options(cfg, opts.top_k, opts.top_p, var_cfg.vocab_size)
    B = labels_B.shape[0]
    key_data_B = np.asarray(jax.random.key_data(per_image_keys(rng, B)))
    fn, mesh = compiled_sampler(var_cfg, vae_cfg, opts, spread,
                                None if refiner is None else refiner.cfg)
    models_params = (var_params, None if refiner is None else refiner.params)
    batched = (labels_B, key_data_B) + (() if edit_B is None else (edit_B[0], *edit_B[1]))
    if mesh is not None:
        models_params, vae_params = sharding.replicate((models_params, vae_params))
        batched = sharding.pad_to_devices(mesh.size, *batched)
    edit_in = None if edit_B is None else (batched[2], tuple(batched[3:]))
    imgs, idx = fn(models_params, vae_params, batched[0], batched[1], edit_in, np.float32(cfg))
    return imgs[:B], idx[:B]


def sample(var_params, vae_params, var_cfg: VARConfig, vae_cfg: VQVAEConfig, labels, rng,
           cfg: float = 1.5, top_k: int = 900, top_p: float = 0.96, more_smooth: bool = False,
           return_indices: bool = False, progress: bool = False,
           refiner: Refiner | tuple | None = None, draft_scales: int | None = None,
           prune_ratio: float = 0.0, prune_scales: int = 0):
    """Sample images of the given classes; returns imgs (B, H, W, 3) float32 in [0, 1]
    [, idx (B, L) int32, all scales coarse to fine].

    rng: a key (split into one per image) or B keys; image b depends only on its own key and
    label. cfg: classifier-free guidance (t = cfg*k/(K-1) at scale k). top_k / top_p: 0 disables.
    more_smooth: gumbel-softmax codes (visual quality, not for FID; the returned indices are
    then the sampled tokens, the images use the soft codes). progress: print a line per scale.
    Beyond the paper (off by default; var_jax/fast_sampling.py): refiner=(params, cfg) with
    draft_scales=N samples scales N.. with the refiner (draft-and-refine); prune_ratio with
    prune_scales prunes tokens at the last scales. The program is compiled once per (configs,
    batch, top_k, top_p, more_smooth, progress, refiner config, draft_scales, prune_ratio,
    prune_scales); cfg is a runtime value. With several local devices the batch is sharded.
    """
    refiner = None if refiner is None else Refiner(*refiner)
    refiner_cfg = None if refiner is None else refiner.cfg
    if refiner_cfg is not None:
        refiner_cfg.check_compatible(vae_cfg)
    check_fast_options(var_cfg, refiner_cfg, draft_scales, prune_ratio, prune_scales)
    opts = SamplerOptions(int(top_k), float(top_p), bool(more_smooth), bool(progress),
                          None if draft_scales is None else int(draft_scales), float(prune_ratio),
                          int(prune_scales))
    imgs, idx = run_sampler(var_params, vae_params, var_cfg, vae_cfg, labels, rng, cfg, opts,
                            refiner=refiner)
    return (imgs, idx) if return_indices else imgs
