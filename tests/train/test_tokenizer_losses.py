"""Tokenizer losses: reconstruction values, hinge GAN, adaptive weight (value, clip, no gradient)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from var_jax.train import tokenizer_losses as tl


def test_reconstruction_losses_values():
    x = jnp.zeros((2, 4, 4, 3))
    y = x.at[0, 0, 0, 0].set(2.0).at[1, 1, 1, 1].set(-1.0)
    out = tl.reconstruction_losses(x, y)
    n = x.size
    np.testing.assert_allclose(out["l1"], 3.0 / n, rtol=1e-6)
    np.testing.assert_allclose(out["l2"], 5.0 / n, rtol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        tl.reconstruction_losses(x, y[:1])


def test_hinge_and_generator_losses():
    real, fake = jnp.array([2.0, 0.5]), jnp.array([-3.0, 0.0])
    # relu(1-2)=0, relu(1-.5)=.5 -> .25 ; relu(1-3)=0, relu(1+0)=1 -> .5 ; half the sum
    np.testing.assert_allclose(tl.hinge_d_loss(real, fake), 0.5 * (0.25 + 0.5))
    np.testing.assert_allclose(tl.generator_loss(fake), 1.5)


def test_adaptive_weight_ratio_clip_and_stop_gradient():
    rec = {"k": jnp.array([3.0, 4.0])}     # norm 5
    gen = {"k": jnp.array([0.0, 2.0])}     # norm 2
    np.testing.assert_allclose(tl.adaptive_gan_weight(rec, gen), 5.0 / (2.0 + 1e-4), rtol=1e-6)
    zero = {"k": jnp.zeros(2)}
    np.testing.assert_allclose(tl.adaptive_gan_weight(rec, zero, max_weight=1e4), 1e4)
    g = jax.grad(lambda s: tl.adaptive_gan_weight({"k": rec["k"] * s}, gen))(1.0)
    assert float(g) == 0.0
