"""VQGAN encoder and decoder (the latent-diffusion "vq-f16" design used by VAR), NHWC.

Submodule names mirror the PyTorch keys (`down_0/block_1/conv1` for `down.0.block.1.conv1`),
so the weight key map is mechanical.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from var_jax.configs import VQVAEConfig
from var_jax.nn.vae_blocks import (AttnBlock, Downsample, Dtype, ResnetBlock, Upsample, conv,
                                   group_norm)


class Level(nn.Module):
    """One resolution level: `num_blocks` ResNet blocks (each followed by attention if `attn`),
    then an optional 2x `resample` ("down" or "up")."""

    out_channels: int
    num_blocks: int
    attn: bool
    resample: Optional[str]
    norm_groups: int
    norm_eps: float
    dtype: Dtype

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        norm = dict(norm_groups=self.norm_groups, norm_eps=self.norm_eps, dtype=self.dtype)
        for i in range(self.num_blocks):
            h = ResnetBlock(self.out_channels, **norm, name=f"block_{i}")(h)
            if self.attn:
                h = AttnBlock(**norm, name=f"attn_{i}")(h)
        if self.resample == "down":
            h = Downsample(self.dtype, name="downsample")(h)
        elif self.resample == "up":
            h = Upsample(self.dtype, name="upsample")(h)
        return h


class MidBlock(nn.Module):
    """block_1, attn_1 (if `attn`), block_2 at the lowest resolution."""

    attn: bool
    norm_groups: int
    norm_eps: float
    dtype: Dtype

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        norm = dict(norm_groups=self.norm_groups, norm_eps=self.norm_eps, dtype=self.dtype)
        h = ResnetBlock(h.shape[-1], **norm, name="block_1")(h)
        if self.attn:
            h = AttnBlock(**norm, name="attn_1")(h)
        return ResnetBlock(h.shape[-1], **norm, name="block_2")(h)


def _norm_kwargs(cfg: VQVAEConfig) -> dict:
    return dict(norm_groups=cfg.norm_groups, norm_eps=cfg.norm_eps, dtype=jnp.dtype(cfg.dtype))


class Encoder(nn.Module):
    """Images (B, H, W, in_channels) -> latent (B, H/d, W/d, z_channels), d = cfg.downsample."""

    cfg: VQVAEConfig

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        cfg, kw = self.cfg, _norm_kwargs(self.cfg)
        dt, last = kw["dtype"], len(cfg.ch_mult) - 1
        h = conv(cfg.ch, 3, dt, "conv_in")(x_BHWC.astype(dt))
        for i, mult in enumerate(cfg.ch_mult):
            h = Level(cfg.ch * mult, cfg.num_res_blocks, attn=(i == last and cfg.using_sa),
                      resample=None if i == last else "down", **kw, name=f"down_{i}")(h)
        h = MidBlock(cfg.using_mid_sa, **kw, name="mid")(h)
        h = nn.silu(group_norm(cfg.norm_groups, cfg.norm_eps, dt, "norm_out")(h))
        return conv(cfg.z_channels, 3, dt, "conv_out")(h)


class Decoder(nn.Module):
    """Latent (B, h, w, z_channels) -> images (B, h*d, w*d, in_channels) in float32, unclamped."""

    cfg: VQVAEConfig

    @nn.compact
    def __call__(self, z_BhwC: jax.Array) -> jax.Array:
        cfg, kw = self.cfg, _norm_kwargs(self.cfg)
        dt, last = kw["dtype"], len(cfg.ch_mult) - 1
        h = conv(cfg.ch * cfg.ch_mult[last], 3, dt, "conv_in")(z_BhwC.astype(dt))
        h = MidBlock(cfg.using_mid_sa, **kw, name="mid")(h)
        for i in reversed(range(len(cfg.ch_mult))):
            h = Level(cfg.ch * cfg.ch_mult[i], cfg.num_res_blocks + 1,
                      attn=(i == last and cfg.using_sa), resample=None if i == 0 else "up",
                      **kw, name=f"up_{i}")(h)
        h = nn.silu(group_norm(cfg.norm_groups, cfg.norm_eps, dt, "norm_out")(h))
        return conv(cfg.in_channels, 3, dt, "conv_out")(h).astype(jnp.float32)
