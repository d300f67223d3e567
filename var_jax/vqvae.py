"""The multi-scale residual VQ-VAE tokenizer (VAR's `vae_ch160v4096z32`) as a Flax linen module.

Images are NHWC float32 in [-1, 1]; token maps are per scale (B, pn*pn) int32, row-major.
Call a method with `VQVAE(cfg).apply({"params": params}, x, method="encode_indices")`.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from var_jax.configs import VQVAEConfig
from var_jax.nn.vae_blocks import conv
from var_jax.nn.vae_coders import Decoder, Encoder
from var_jax.quant import msvq


def _codebook_init(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """Uniform in [-1/V, 1/V) (taming's VQ codebook init)."""
    return jax.random.uniform(key, shape, dtype, -1.0 / shape[0], 1.0 / shape[0])


class PhiConv(nn.Module):
    """Parameters of one phi: a 3x3 conv on the latent (kernel HWIO, bias)."""

    channels: int

    def setup(self):
        c = self.channels
        self.kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, c, c))
        self.bias = self.param("bias", nn.initializers.zeros, (c,))


class Quantizer(nn.Module):
    """Parameters of the quantizer: the codebook `embedding` (V, C) and `cfg.num_phi` phis."""

    cfg: VQVAEConfig

    def setup(self):
        V, C = self.cfg.vocab_size, self.cfg.z_channels
        self.embedding = self.param("embedding", _codebook_init, (V, C))
        self.phi = [PhiConv(C) for _ in range(self.cfg.num_phi)]

    def arrays(self) -> tuple[jax.Array, list[msvq.PhiParams]]:
        """(codebook_VC, [(kernel_33CC, bias_C), ...]) for the pure functions of `msvq`."""
        return self.embedding, [(p.kernel, p.bias) for p in self.phi]


def _check_index_values(idx_list: Sequence[jax.Array], vocab_size: int) -> None:
    """Range-check concrete index maps (traced ones, e.g. under jit, cannot be inspected)."""
    for si, idx in enumerate(idx_list):
        if isinstance(idx, jax.core.Tracer):
            continue
        a = np.asarray(idx)
        if a.size and (a.min() < 0 or a.max() >= vocab_size):
            raise ValueError(f"index map of scale {si} has values in [{a.min()}, {a.max()}], "
                             f"outside the codebook range [0, {vocab_size - 1}].")


class VQVAE(nn.Module):
    """Encoder -> quant_conv -> multi-scale residual VQ -> post_quant_conv -> decoder."""

    cfg: VQVAEConfig

    def setup(self):
        cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = conv(cfg.z_channels, 3, dt)
        self.post_quant_conv = conv(cfg.z_channels, 3, dt)
        self.quantize = Quantizer(cfg)

    # ----------------------------------------------------------------- checks
    def _check_images(self, imgs: jax.Array) -> None:
        cfg = self.cfg
        want = (cfg.image_size, cfg.image_size, cfg.in_channels)
        if imgs.ndim != 4 or tuple(imgs.shape[1:]) != want:
            raise ValueError(f"images must be NHWC (B, {want[0]}, {want[1]}, {want[2]}) for "
                             f"image_size={cfg.image_size}, got shape {tuple(imgs.shape)}; "
                             "resize/crop them first or use a config with that image_size.")
        if not jnp.issubdtype(imgs.dtype, jnp.floating):
            raise ValueError(f"images must be floating point in [-1, 1], got dtype {imgs.dtype}; "
                             "convert uint8 pixels with x / 127.5 - 1.")

    def _check_fhat(self, f_hat_BhwC: jax.Array) -> None:
        n, C = self.cfg.patch_nums[-1], self.cfg.z_channels
        if f_hat_BhwC.ndim != 4 or tuple(f_hat_BhwC.shape[1:]) != (n, n, C):
            raise ValueError(f"f_hat must be (B, {n}, {n}, {C}), got {tuple(f_hat_BhwC.shape)}.")

    # ----------------------------------------------------------------- public API
    def codebook(self) -> jax.Array:
        """(V, Cvae) the code vectors."""
        return self.quantize.arrays()[0]

    def encode_f(self, imgs_BHW3: jax.Array) -> jax.Array:
        """Images -> continuous latent f = quant_conv(encoder(x)): (B, n, n, Cvae) float32."""
        self._check_images(imgs_BHW3)
        return self.quant_conv(self.encoder(imgs_BHW3)).astype(jnp.float32)

    def encode_indices(self, imgs_BHW3: jax.Array) -> list[jax.Array]:
        """Images -> token maps, one (B, pn*pn) int32 per scale, coarse to fine."""
        codebook_VC, phis = self.quantize.arrays()
        return msvq.encode(self.encode_f(imgs_BHW3), codebook_VC, phis, self.cfg)[0]

    def indices_to_fhat(self, idx_list: Sequence[jax.Array]) -> list[jax.Array]:
        """Token maps -> the running f_hat (B, n, n, Cvae) after each scale."""
        _check_index_values(idx_list, self.cfg.vocab_size)
        codebook_VC, phis = self.quantize.arrays()
        return msvq.indices_to_fhat(idx_list, codebook_VC, phis, self.cfg)

    def decode_fhat(self, f_hat_BhwC: jax.Array) -> jax.Array:
        """f_hat -> images (B, H, W, 3) float32 clamped to [-1, 1]."""
        self._check_fhat(f_hat_BhwC)
        return jnp.clip(self.decoder(self.post_quant_conv(f_hat_BhwC)), -1.0, 1.0)

    def decode_per_scale(self, idx_list: Sequence[jax.Array]) -> jax.Array:
        """Token maps -> (K, B, H, W, 3) in [-1, 1]: the decode of the running f_hat after each
        scale, coarse to fine (the last one is the reconstruction); one decoder is compiled."""
        return jax.lax.map(self.decode_fhat, jnp.stack(self.indices_to_fhat(idx_list)))

    def teacher_forcing_input(self, idx_list: Sequence[jax.Array]) -> jax.Array:
        """Token maps (all K scales, or the first K-1) -> transformer input (B, L-pn0^2, Cvae)."""
        _check_index_values(idx_list, self.cfg.vocab_size)
        codebook_VC, phis = self.quantize.arrays()
        return msvq.teacher_forcing_input(idx_list, codebook_VC, phis, self.cfg)

    def next_scale_input(self, si: int, f_hat_BhwC: jax.Array,
                         h_BlC: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Sampling step at scale `si` (python int): add the scale's code vectors h_BlC
        (B, pn_si^2, Cvae) to f_hat; returns (f_hat, input of scale si+1 (B, pn_{si+1}^2, Cvae))
        (for the last scale the second item is f_hat flattened)."""
        _, phis = self.quantize.arrays()
        return msvq.next_scale_input(si, f_hat_BhwC, h_BlC, phis, self.cfg)

    def __call__(self, imgs_BHW3: jax.Array, train: bool = True) -> dict:
        """Training forward with the straight-through estimator.

        Returns a dict:
          "recon": (B, H, W, 3) float32 decoder output of the straight-through f_hat; unclamped
            when `train` (as the reference's training forward), clamped to [-1, 1] otherwise;
          "vq_loss": scalar, mean over scales of beta*mse(sg(f_hat_k), f) + mse(f_hat_k, sg(f));
          "usage_per_scale": (K,) fraction of the codebook hit by each scale in this batch;
          "hist_per_scale": (K, V) int32 code counts per scale (for perplexity / dead codes);
          "indices": list of (B, pn*pn) int32 token maps.
        """
        codebook_VC, phis = self.quantize.arrays()
        q = msvq.quantize_train(self.encode_f(imgs_BHW3), codebook_VC, phis, self.cfg)
        recon = self.decoder(self.post_quant_conv(q["f_hat"]))
        return {
            "recon": recon if train else jnp.clip(recon, -1.0, 1.0),
            "vq_loss": q["vq_loss"],
            "usage_per_scale": q["usage_per_scale"],
            "hist_per_scale": q["hist_per_scale"],
            "indices": q["indices"],
        }
