"""Codebook health: usage/perplexity, dead-code bookkeeping, and re-initialisation of exactly the dead codes."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from var_jax.configs import VQVAEConfig
from var_jax.quant.resize import area_resize
from var_jax.train import tokenizer_codebook as cb


def test_usage_and_perplexity():
    hist = jnp.array([[4, 0, 0, 0], [1, 1, 1, 1], [2, 2, 0, 0]])
    np.testing.assert_allclose(cb.usage_per_scale(hist), [0.25, 1.0, 0.5])
    np.testing.assert_allclose(cb.perplexity_per_scale(hist), [1.0, 4.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(cb.perplexity_per_scale(jnp.zeros((1, 4), jnp.int32)), [1.0])


def test_last_hit_and_dead_window():
    last = jnp.array([0, 5, 9, 2], jnp.int32)
    hist = jnp.array([[0, 0, 0, 3], [1, 0, 0, 0]])
    step = jnp.array(10)
    new = cb.update_last_hit(last, hist, step)
    np.testing.assert_array_equal(new, [10, 5, 9, 10])
    np.testing.assert_array_equal(cb.dead_codes(new, step, window=5), [False, True, False, False])
    np.testing.assert_array_equal(cb.dead_codes(new, step, window=6), [False, False, False, False])


def test_scale_queries_are_the_residuals_each_scale_quantizes():
    cfg = VQVAEConfig(vocab_size=16, z_channels=4, ch=32, ch_mult=(1, 2), patch_nums=(1, 2, 4),
                      image_size=8)
    f = jax.random.normal(jax.random.key(0), (2, 4, 4, 4))
    fh0 = jnp.broadcast_to(jnp.mean(f, axis=(1, 2), keepdims=True), f.shape)
    fh1 = fh0 + 0.1
    q = cb.scale_queries(f, [fh0, fh1, f], cfg)
    chex.assert_shape(q, [(2, 4), (8, 4), (32, 4)])
    np.testing.assert_allclose(q[0], jnp.mean(f, axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q[1], area_resize(f - fh0, (2, 2)).reshape(-1, 4), atol=1e-6)
    np.testing.assert_allclose(q[2], (f - fh1).reshape(-1, 4), atol=1e-6)


def test_reinit_replaces_exactly_the_dead_codes():
    V, C = 64, 8
    codebook = jax.random.normal(jax.random.key(1), (V, C))
    dead = jnp.zeros(V, bool).at[jnp.array([0, 7, 8, 40, 63])].set(True)
    # per-scale pools with recognisable values: scale s holds vectors 100*(s+1) + row
    queries = [jnp.tile((100.0 * (s + 1) + jnp.arange(n))[:, None], (1, C))
               for s, n in enumerate((2, 8, 32))]
    new = cb.reinit_dead_codes(codebook, dead, queries, jax.random.key(2))
    new, codebook, dead = map(np.asarray, (new, codebook, dead))
    np.testing.assert_array_equal(new[~dead], codebook[~dead])       # live rows bit-identical
    pool = np.concatenate([np.asarray(q) for q in queries])
    for v in np.flatnonzero(dead):
        assert (pool == new[v]).all(axis=1).any(), (v, new[v])     # a real latent vector
    assert not np.isclose(new[dead], codebook[dead]).all(axis=1).any()


def test_reinit_draws_scales_evenly():
    V = 3000
    queries = [jnp.full((1, 2), 1.0), jnp.full((100, 2), 2.0), jnp.full((1000, 2), 3.0)]
    new = cb.reinit_dead_codes(jnp.zeros((V, 2)), jnp.ones(V, bool), queries, jax.random.key(0))
    frac = np.bincount(np.asarray(new[:, 0]).astype(int), minlength=4)[1:] / V
    np.testing.assert_allclose(frac, [1 / 3] * 3, atol=0.04)
