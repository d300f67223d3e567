"""Tokenizer GAN: nothing of the discriminator before disc_start, then both losses and the
adaptive weight, which equals the brute-force ratio of last-layer gradient norms."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from tokenizer_helpers import GAN, fast_jit, images, make_state, make_task
from var_jax.train import tokenizer_losses as tl
from var_jax.train.tokenizer_config import CodebookConfig, TokenizerLossConfig


def test_discriminator_switches_on_at_disc_start_with_the_adaptive_weight():
    task = make_task(TokenizerLossConfig(**GAN, disc_start=1), CodebookConfig(check_every=0))
    state = make_state(task)
    step = fast_jit(task.train_step)
    x = images()
    disc0 = jax.device_get(state.params["disc"])
    state, m0 = step(state, {"image": x}, jax.random.key(1))
    for k in ("d_loss", "g_loss", "gan_weight", "logits_real", "logits_fake"):
        assert float(m0[k]) == 0.0, (k, m0[k])
    chex.assert_trees_all_equal(jax.device_get(state.params["disc"]), disc0)   # not updated
    params1 = jax.tree.map(jnp.array, state.params)   # a copy: the next step donates state
    state, m1 = step(state, {"image": x}, jax.random.key(2))
    assert float(m1["d_loss"]) > 0 and float(m1["gan_weight"]) > 0, m1
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                         jax.device_get(state.params["disc"]), disc0)
    assert all(v["kernel"] > 0 for v in moved.values() if "kernel" in v), moved
    np.testing.assert_allclose(m1["loss"], m1["l1"] + m1["l2"] + m1["vq_loss"]
                               + m1["gan_weight"] * m1["g_loss"], rtol=1e-5)

    # brute force: gradients of both losses w.r.t. the decoder's last kernel, full forward each
    vq = params1["vqvae"]

    def losses(kernel):
        p = {**vq, "decoder": {**vq["decoder"], "conv_out": {**vq["decoder"]["conv_out"],
                                                             "kernel": kernel}}}
        recon = task.vqvae.apply({"params": p}, x, train=True)["recon"]
        rec = task.reconstruction_loss(None, x, recon)[0]
        gen = tl.generator_loss(task.disc.apply({"params": params1["disc"]}, recon))
        return jnp.stack([rec, gen])

    jac = fast_jit(jax.jacrev(losses))(vq["decoder"]["conv_out"]["kernel"])
    want = GAN["disc_weight"] * jnp.linalg.norm(jac[0]) / (jnp.linalg.norm(jac[1]) + 1e-4)
    np.testing.assert_allclose(m1["gan_weight"], want, rtol=1e-4,
                               err_msg=f"adaptive weight {m1['gan_weight']} vs brute force {want}")
