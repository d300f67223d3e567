"""Training-free faster sampling (beyond the paper): draft-and-refine and last-scale pruning.

Both are options of the one compiled sampler (var_jax/sampling.py), off by default.

Draft-and-refine (after CoDe): a large drafter samples scales [0, N); a small refiner, sharing
the tokenizer, fills its KV cache for those scales in one teacher-forcing pass over the drafted
scales' inputs (`prefill`: the same inputs teacher forcing would see, i.e. the class token and
the tokenizer's next-scale inputs of the drafted token maps), then samples scales [N, K).

Token pruning (after FastVAR): at the last `prune_scales` scales, only the `keep` tokens
farthest (L2) from the scale's mean input token go through the blocks (all blocks: one pruned
call of the scanned stack); `keep = round((1 - ratio) * l)` is static. Every other position
takes the "cached output": the previous scale's final hidden states (the last block's output,
before the head norm), bilinearly upsampled to this scale's grid. The head then runs on all
positions. KV cache: a pruned scale writes only its kept tokens' keys/values, packed at the
front of its slot, and later queries attend only to written entries: scale s starts at
`cache_begins()[s]` (the kept counts of the scales before it), so the cache stays a prefix.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from var_jax.configs import VARConfig
from var_jax.nn.attention import block_causal_mask
from var_jax.var import VAR


class Refiner(NamedTuple):
    """The small model of draft-and-refine: its params and config (same tokenizer)."""

    params: dict
    cfg: VARConfig


def kept_counts(patch_nums, prune_ratio: float, prune_scales: int) -> tuple[int, ...]:
    """Tokens each scale runs through the blocks: all, or round((1 - ratio) * l) at the last
    `prune_scales` scales."""
    K = len(patch_nums)
    return tuple(max(1, round((1.0 - prune_ratio) * pn * pn)) if si >= K - prune_scales
                 else pn * pn for si, pn in enumerate(patch_nums))


def cache_begins(keeps) -> tuple[int, ...]:
    """Where each scale's keys/values start in the packed KV cache."""
    out, at = [], 0
    for k in keeps:
        out.append(at)
        at += k
    return tuple(out)


def check_fast_options(var_cfg: VARConfig, refiner_cfg: VARConfig | None, draft_scales: int | None,
                       prune_ratio: float, prune_scales: int) -> int:
    """Validate the options; returns N, the number of scales the drafter samples (K if none)."""
    K = var_cfg.num_scales
    if not 0.0 <= prune_ratio < 1.0:
        raise ValueError(f"prune_ratio (--prune-ratio) = {prune_ratio} must be in [0, 1) "
                         "(0: no pruning; FastVAR-like settings are 0.4-0.75).")
    if int(prune_scales) != prune_scales or not 0 <= prune_scales < K:
        raise ValueError(f"prune_scales (--prune-scales) = {prune_scales} must be an int in "
                         f"[0, {K - 1}] (scale 0 has no previous scale to fill pruned tokens "
                         "from); 2 prunes the two largest scales.")
    if refiner_cfg is None:
        if draft_scales is not None:
            raise ValueError(f"draft_scales (--draft-scales) = {draft_scales} needs a refiner "
                             "(--refiner PATH); drop it to sample with one model.")
        return K
    if draft_scales is None or int(draft_scales) != draft_scales or not 1 <= draft_scales <= K:
        raise ValueError(f"draft_scales (--draft-scales) = {draft_scales} must be an int in "
                         f"[1, {K}]: how many scales the drafter samples before the refiner "
                         "(CoDe used 8 or 6 of 10).")
    mine = (var_cfg.patch_nums, var_cfg.vocab_size, var_cfg.vae_channels, var_cfg.num_classes)
    theirs = (refiner_cfg.patch_nums, refiner_cfg.vocab_size, refiner_cfg.vae_channels,
              refiner_cfg.num_classes)
    if mine != theirs:
        raise ValueError(f"the refiner (scales, vocab, code width, classes) = {theirs} differs "
                         f"from the drafter's {mine}; both must be trained on one tokenizer.")
    if prune_scales and draft_scales > K - prune_scales:
        raise ValueError(f"--prune-scales {prune_scales} prunes drafted scales (the drafter "
                         f"samples {draft_scales} of {K}); prune at most {K - draft_scales} "
                         "scales with a refiner, or draft fewer.")
    return int(draft_scales)


def farthest_tokens(x_BlC, keep: int):
    """(B, keep) indices, ascending, of the tokens farthest (L2) from their scale's mean."""
    x32 = x_BlC.astype(jnp.float32)
    dist_Bl = jnp.sum(jnp.square(x32 - jnp.mean(x32, axis=1, keepdims=True)), axis=-1)
    return jnp.sort(jax.lax.top_k(dist_Bl, keep)[1], axis=-1)


def upsample_tokens(h_BpC, pn: int):
    """A previous scale's (B, p*p, C) tokens bilinearly resized to the (B, pn*pn, C) grid."""
    B, pp, C = h_BpC.shape
    p = int(round(pp ** 0.5))
    up = jax.image.resize(h_BpC.reshape(B, p, p, C).astype(jnp.float32), (B, pn, pn, C),
                          method="bilinear")
    return up.reshape(B, pn * pn, C)


def run_scale(model: VAR, vp, x_BlC, cond_blocks, kv_caches, *, keep: int, cache_begin: int,
              h_prev_BpC=None):
    """One scale through the blocks, pruned to `keep` tokens when keep < l; (hidden_BlC, caches)."""
    pn = int(round(x_BlC.shape[1] ** 0.5))
    if keep == x_BlC.shape[1]:
        return model.apply(vp, x_BlC, cond_blocks, kv_caches, cache_begin,
                           method=VAR.blocks_cached)
    idx_Bk = farthest_tokens(x_BlC, keep)
    x_BkC = jnp.take_along_axis(x_BlC, idx_Bk[..., None], axis=1)
    h_BkC, kv_caches = model.apply(vp, x_BkC, cond_blocks, kv_caches, cache_begin,
                                   method=VAR.blocks_cached)
    base_BlC = upsample_tokens(h_prev_BpC, pn).astype(h_BkC.dtype)
    h_BlC = jax.vmap(lambda base, i, h: base.at[i].set(h))(base_BlC, idx_Bk, h_BkC)
    return h_BlC, kv_caches


def prefill(model: VAR, vp, cond_BD, cond_blocks, next_inputs, kv_caches, num_drafted: int):
    """The refiner's KV cache for scales [0, N) in one teacher-forcing pass; (hidden, caches).

    next_inputs[s]: the tokenizer's next-scale input made from scale s's drafted tokens (the
    input of scale s + 1), (B, pn_{s+1}**2, Cvae), for s < N - 1; the CFG batch is doubled here.
    hidden: the last drafted scale's final hidden states (2B, pn_{N-1}**2, C).
    """
    x = [model.apply(vp, cond_BD, method=VAR.embed_first)]
    for s in range(1, num_drafted):
        x.append(jnp.repeat(model.apply(vp, s, next_inputs[s - 1], method=VAR.embed_scale), 2, 0))
    mask = block_causal_mask(model.cfg.patch_nums[:num_drafted])
    h_BLC, kv_caches = model.apply(vp, jnp.concatenate(x, axis=1), cond_blocks, kv_caches, 0,
                                   mask, method=VAR.blocks_cached)
    last = model.cfg.patch_nums[num_drafted - 1] ** 2
    return h_BLC[:, -last:], kv_caches
