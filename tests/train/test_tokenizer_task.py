"""Tokenizer train step: the straight-through gradient reaches the encoder; dead-code reset
replaces exactly the dead codes; the perceptual loss reads the user's weight files."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenizer_helpers import VQ, fast_jit, images, make_state, make_task
from var_jax.train.tokenizer_config import CodebookConfig, TokenizerLossConfig
from var_jax.train.tokenizer_task import CODEBOOK_PATH


@pytest.fixture(scope="module")
def runs():
    """Reconstruction loss only (vq_weight=0). Codes 3, 7, 11, ... unused for 100 steps; one
    step at step 100 (no codebook check: 101 is odd), one at step 101 (checked); everything else
    is equal (constant lr, same batch, same key), so the two results differ only by the reset."""
    task = make_task(TokenizerLossConfig(l1_weight=1.0, l2_weight=1.0, vq_weight=0.0),
                     CodebookConfig(dead_window=50, check_every=2, min_usage=0.0))
    state = make_state(task)
    stale = jnp.zeros(VQ.vocab_size, bool).at[3::4].set(True)
    last_hit = jnp.broadcast_to(jnp.where(stale, 0, 99), (VQ.num_scales, VQ.vocab_size))
    step = fast_jit(task.train_step)
    out = {}
    for name, at in (("plain", 100), ("checked", 101)):
        before = state.replace(step=jnp.int32(at), extra={"last_hit": last_hit.astype(jnp.int32)})
        new, metrics = step(before, {"image": images()}, jax.random.key(5))
        out[name] = (jax.device_get(before), jax.device_get(new), jax.device_get(metrics), at)
    return task, out


def _moved(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_straight_through_gradient_reaches_the_encoder(runs):
    _, out = runs
    before, after, metrics, _ = out["plain"]
    b, a = before.params["vqvae"], after.params["vqvae"]
    assert metrics["grad_norm"] > 0
    # Adam moves a parameter iff its gradient is nonzero (fresh moments, constant lr, no decay)
    for name in ("encoder", "quant_conv", "post_quant_conv", "decoder"):
        assert _moved(b[name], a[name]) > 0, f"no reconstruction gradient reached {name}"
    # through f + sg(f_hat - f) the codebook and the phis get no reconstruction gradient
    assert _moved(b["quantize"], a["quantize"]) == 0


def test_dead_code_reset_replaces_exactly_the_dead_codes(runs):
    task, out = runs
    _, plain, m_plain, at_plain = out["plain"]
    before, checked, m, at = out["checked"]
    book = lambda s: np.asarray(s.params["vqvae"][CODEBOOK_PATH[0]][CODEBOOK_PATH[1]])  # noqa
    hit = (np.asarray(plain.extra["last_hit"]) == at_plain).any(axis=0)   # used by this batch
    dead = np.zeros(VQ.vocab_size, bool)
    dead[3::4] = True
    dead &= ~hit
    assert dead.sum() >= 3, "test setup: too few dead codes"
    assert int(m["codes_reset"]) == dead.sum() and int(m_plain["codes_reset"]) == 0
    np.testing.assert_array_equal(np.any(book(checked) != book(before), axis=1), dead)
    np.testing.assert_array_equal(book(plain), book(before))   # no codebook gradient (vq_weight 0)
    # the new rows are latent vectors this batch's scales look up with the updated params (the
    # reset follows the optimizer update, whose result the plain run holds)
    queries = fast_jit(task.scale_queries)(plain.params["vqvae"], images())
    queries = np.concatenate(jax.device_get(queries))
    for v in np.flatnonzero(dead):
        assert np.min(np.abs(queries - book(checked)[v]).max(axis=1)) < 1e-5, v
    np.testing.assert_array_equal(np.asarray(checked.extra["last_hit"]).max(0)[dead], at)
    assert int(m["dead_codes"]) == 0 and int(m_plain["dead_codes"]) == dead.sum()


def test_perceptual_loss_uses_the_given_weight_files(tmp_path):
    from var_jax.nn.perceptual import lpips_abstract_params

    rng, shapes, sd = np.random.default_rng(0), lpips_abstract_params(), {}
    for name, leaves in shapes["vgg"].items():                 # features_N -> features.N.*
        n, k = name.split("_")[1], leaves["kernel"].shape       # HWIO -> torch OIHW
        sd[f"features.{n}.weight"] = rng.normal(0, 0.05, (k[3], k[2], k[0], k[1])).astype("f4")
        sd[f"features.{n}.bias"] = np.zeros(leaves["bias"].shape, "f4")
    for i in range(5):
        c = shapes[f"lin_{i}"]["kernel"].shape[2]
        sd[f"lin{i}.model.1.weight"] = rng.uniform(0, 0.1, (1, c, 1, 1)).astype("f4")
    np.savez(tmp_path / "lpips.npz", **sd)
    task = make_task(TokenizerLossConfig(perceptual_weight=0.5,
                                         perceptual_weights=str(tmp_path / "lpips.npz")))
    frozen = task.load_frozen(None)
    np.testing.assert_array_equal(frozen["lin_2"]["kernel"][0, 0, :, 0],
                                  sd["lin2.model.1.weight"][0, :, 0, 0])
    params = task.init(jax.random.key(0))["params"]
    loss, aux = fast_jit(lambda p, f: task.objective(p, {"image": images()}, None,
                                                    lpips_params=f))(params, frozen)
    assert float(aux["perceptual"]) > 0
    np.testing.assert_allclose(loss, aux["l1"] + aux["l2"] + aux["vq_loss"]
                               + 0.5 * aux["perceptual"], rtol=1e-5)
    assert make_task(TokenizerLossConfig(perceptual_weight=0.5)).lpips is None   # no files: off
