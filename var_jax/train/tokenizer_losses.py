"""Tokenizer training losses: reconstruction, hinge GAN, and the adaptive GAN weight (taming-style)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

ADAPTIVE_WEIGHT_MAX = 1e4   # taming-transformers' clamp of the adaptive GAN weight
_NORM_EPS = 1e-4


def reconstruction_losses(imgs_BHWC: jax.Array, recon_BHWC: jax.Array) -> dict[str, jax.Array]:
    """{"l1": mean |x - x'|, "l2": mean (x - x')^2} over pixels, channels and batch (float32)."""
    if imgs_BHWC.shape != recon_BHWC.shape:
        raise ValueError(f"images {tuple(imgs_BHWC.shape)} and reconstructions "
                         f"{tuple(recon_BHWC.shape)} must have the same shape.")
    diff = recon_BHWC.astype(jnp.float32) - imgs_BHWC.astype(jnp.float32)
    return {"l1": jnp.mean(jnp.abs(diff)), "l2": jnp.mean(jnp.square(diff))}


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """Discriminator hinge loss: (mean relu(1 - D(x)) + mean relu(1 + D(x'))) / 2."""
    real = jnp.mean(jax.nn.relu(1.0 - logits_real))
    fake = jnp.mean(jax.nn.relu(1.0 + logits_fake))
    return 0.5 * (real + fake)


def generator_loss(logits_fake: jax.Array) -> jax.Array:
    """Generator side of the hinge GAN: -mean D(x')."""
    return -jnp.mean(logits_fake)


def adaptive_gan_weight(rec_grad, gen_grad, max_weight: float = ADAPTIVE_WEIGHT_MAX) -> jax.Array:
    """||d rec / d last|| / (||d gen / d last|| + 1e-4), clipped to [0, max_weight], no gradient.

    `rec_grad` and `gen_grad` are the gradients (any pytree, e.g. the decoder's last conv kernel)
    of the reconstruction and the generator losses w.r.t. the same last-layer parameters.
    """
    w = optax.tree.norm(rec_grad) / (optax.tree.norm(gen_grad) + _NORM_EPS)
    return jax.lax.stop_gradient(jnp.clip(w, 0.0, max_weight))
