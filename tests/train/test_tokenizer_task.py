"""Tokenizer train step: straight-through gradients, adaptive GAN weight, GAN warm-up switch, dead-code reset."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from var_jax.configs import VQVAEConfig
from var_jax.train import tokenizer_losses as tl
from var_jax.train.input import DataConfig
from var_jax.train.loop import LoopConfig
from var_jax.train.state import TrainState
from var_jax.train.tokenizer_config import (CodebookConfig, TokenizerLossConfig,
                                            TokenizerTrainConfig)
from var_jax.train.tokenizer_task import CODEBOOK_PATH, TokenizerTask

VQ = VQVAEConfig(vocab_size=32, z_channels=8, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                 patch_nums=(1, 2, 4, 8), image_size=16, norm_groups=8, using_sa=False,
                 using_mid_sa=False)
GAN = dict(disc_weight=0.5, disc_channels=16, disc_layers=2, disc_norm_groups=8)


def make_task(loss=TokenizerLossConfig(), codebook=CodebookConfig(), total_steps=10):
    return TokenizerTask(TokenizerTrainConfig(
        vqvae=VQ, loop=LoopConfig(global_batch=4, total_steps=total_steps),
        data=DataConfig(source="digits", image_size=16), loss=loss, codebook=codebook))


def make_state(task, seed=0):
    key = jax.random.key(seed)
    return TrainState.create(params=task.init_params(key), tx=task.optimizer(), rng=key,
                             frozen=task.init_frozen(key), extra=task.init_extra())


def images(seed=1, n=4):
    return jax.random.uniform(jax.random.key(seed), (n, 16, 16, 3), minval=-1, maxval=1)


def test_straight_through_gradient_reaches_the_encoder():
    task = make_task(TokenizerLossConfig(l1_weight=1.0, l2_weight=0.0, vq_weight=0.0))
    params = task.init_params(jax.random.key(0))
    grads = jax.jit(jax.grad(lambda p: task.objective(p, {"image": images()}, None)[0]))(params)
    g = grads["vqvae"]
    for name in ("encoder", "quant_conv", "decoder", "post_quant_conv"):
        norm = float(tl.global_norm(g[name]))
        assert norm > 1e-6, f"no reconstruction gradient reaches {name} (norm {norm})"
    # the codebook and phis learn from the VQ loss only (the recon sees f + sg(f_hat - f))
    assert float(tl.global_norm(g["quantize"])) == 0.0


def test_adaptive_weight_matches_brute_force_gradients():
    task = make_task(TokenizerLossConfig(**GAN))
    params = task.init_params(jax.random.key(0))
    x = images()
    _, aux = task.objective(params, {"image": x}, None, gan_on=jnp.asarray(True))
    kernel = params["vqvae"]["decoder"]["conv_out"]["kernel"]

    def losses(k):   # full forward with the last layer's kernel replaced
        vq = {**params["vqvae"], "decoder": {**params["vqvae"]["decoder"], "conv_out": {
            **params["vqvae"]["decoder"]["conv_out"], "kernel": k}}}
        recon = task.vqvae.apply({"params": vq}, x, train=True)["recon"]
        rec = task.reconstruction_loss(None, x, recon)[0]
        gen = tl.generator_loss(task.disc.apply({"params": params["disc"]}, recon))
        return jnp.stack([rec, gen])

    jac = jax.jacrev(losses)(kernel)
    want = GAN["disc_weight"] * jnp.linalg.norm(jac[0]) / (jnp.linalg.norm(jac[1]) + 1e-4)
    np.testing.assert_allclose(aux["gan_weight"], want, rtol=1e-4,
                               err_msg=f"adaptive weight {aux['gan_weight']} vs brute force {want}")
    assert float(aux["d_loss"]) > 0 and float(aux["gan_weight"]) > 0


def test_discriminator_switches_on_at_disc_start():
    task = make_task(TokenizerLossConfig(**GAN, disc_start=1),
                     CodebookConfig(check_every=0))
    state = make_state(task)
    step = jax.jit(task.train_step)
    batch = {"image": images()}
    disc0 = jax.device_get(state.params["disc"])
    state, m0 = step(state, batch, jax.random.key(1))
    for k in ("d_loss", "g_loss", "gan_weight", "logits_real", "logits_fake"):
        assert float(m0[k]) == 0.0, (k, m0[k])
    chex.assert_trees_all_equal(jax.device_get(state.params["disc"]), disc0)   # no update at all
    state, m1 = step(state, batch, jax.random.key(2))
    assert float(m1["d_loss"]) > 0 and float(m1["gan_weight"]) > 0, m1
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                         jax.device_get(state.params["disc"]), disc0)
    assert all(v["kernel"] > 0 for v in moved.values() if "kernel" in v), moved
    np.testing.assert_allclose(m1["loss"], m1["l1"] + m1["l2"] + m1["vq_loss"]
                               + m1["gan_weight"] * m1["g_loss"], rtol=1e-5)


@pytest.fixture(scope="module")
def dead_code_runs():
    """One step from a state where codes 3, 7, 11, ... have not been hit for 100 steps, with and
    without the check; everything else identical."""
    out = {}
    for check in (1, 0):
        task = make_task(codebook=CodebookConfig(dead_window=50, check_every=check,
                                                 min_usage=0.0))
        state = make_state(task)
        stale = jnp.zeros(VQ.vocab_size, bool).at[3::4].set(True)
        last_hit = jnp.broadcast_to(jnp.where(stale, 0, 99), (VQ.num_scales, VQ.vocab_size))
        state = state.replace(step=jnp.int32(100), extra={"last_hit": last_hit.astype(jnp.int32)})
        new, metrics = jax.jit(task.train_step)(state, {"image": images()}, jax.random.key(5))
        out[check] = (task, state, new, metrics)
    return out


def test_dead_code_reset_replaces_exactly_the_dead_codes(dead_code_runs):
    task, before, with_reset, m = dead_code_runs[1]
    _, _, without, m_off = dead_code_runs[0]
    book = lambda s: np.asarray(s.params["vqvae"][CODEBOOK_PATH[0]][CODEBOOK_PATH[1]])  # noqa
    hit = (np.asarray(without.extra["last_hit"]) == 100).any(axis=0)   # used by this batch
    stale = np.zeros(VQ.vocab_size, bool)
    stale[3::4] = True
    dead = stale & ~hit
    assert dead.sum() >= 3, "test setup: too few dead codes"
    assert int(m["codes_reset"]) == dead.sum() and int(m_off["codes_reset"]) == 0
    changed = np.any(book(with_reset) != book(without), axis=1)
    np.testing.assert_array_equal(changed, dead)
    # the new rows are latent vectors this batch's scales look up with the updated params (the
    # reset happens after the optimizer update, which is what the run without the check holds)
    queries = np.concatenate(jax.device_get(task.scale_queries(
        without.params["vqvae"], images())))
    for v in np.flatnonzero(dead):
        assert np.min(np.abs(queries - book(with_reset)[v]).max(axis=1)) < 1e-5, v
    np.testing.assert_array_equal(np.asarray(with_reset.extra["last_hit"]).max(0)[dead], 100)
    assert int(m["dead_codes"]) == 0 and int(m_off["dead_codes"]) == dead.sum()
