"""Codebook health: usage/perplexity, per-scale bookkeeping, which codes are re-initialised with what."""
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


def test_last_hit_dead_and_live():
    last = jnp.array([[0, 5, 9, 2], [1, 1, 1, 1]], jnp.int32)
    hist = jnp.array([[0, 0, 0, 3], [1, 0, 0, 0]])
    step = jnp.array(10)
    new = cb.update_last_hit(last, hist, step)
    np.testing.assert_array_equal(new, [[0, 5, 9, 10], [10, 1, 1, 1]])
    np.testing.assert_array_equal(cb.dead_codes(new, step, window=5), [False, True, False, False])
    np.testing.assert_array_equal(cb.live_codes_per_scale(new, step, window=5), [2, 1])


def test_min_codes_per_scale():
    cfg = VQVAEConfig(vocab_size=64, z_channels=4, ch=32, ch_mult=(1, 2), patch_nums=(1, 2, 4),
                      image_size=8)
    assert cb.min_codes_per_scale(cfg, 16, 0.5) == (8, 32, 32)
    assert cb.min_codes_per_scale(cfg, 16, 0.0) == (0, 0, 0)


def test_plan_takes_exactly_the_dead_codes_when_no_scale_starves():
    step = jnp.int32(100)
    last = jnp.full((3, 32), 95, jnp.int32).at[:, jnp.array([2, 9, 30])].set(10)
    plan = np.asarray(cb.plan_reinit(last, step, 50, (0, 0, 0), jax.random.key(0)))
    np.testing.assert_array_equal(np.flatnonzero(plan != cb.KEEP), [2, 9, 30])
    assert set(plan[[2, 9, 30]]) <= {0, 1, 2}


def test_plan_gives_a_starving_scale_its_deficit_of_least_recently_used_codes():
    step, V = jnp.int32(100), 32
    recency = jnp.arange(60, 60 + V, dtype=jnp.int32)      # code v last used at step 60 + v
    last = jnp.stack([jnp.full((V,), -1000, jnp.int32).at[5].set(99),   # scale 0 uses 1 code
                      recency, recency])
    plan = np.asarray(cb.plan_reinit(last, step, 50, (4, 0, 0), jax.random.key(0)))
    # live codes of scale 0: 1, floor 4 -> the 3 least recently used codes (0, 1, 2) go to it
    np.testing.assert_array_equal(np.flatnonzero(plan != cb.KEEP), [0, 1, 2])
    np.testing.assert_array_equal(plan[[0, 1, 2]], 0)
    marked = np.asarray(cb.mark_reinit(last, jnp.asarray(plan), step))
    np.testing.assert_array_equal(cb.live_codes_per_scale(jnp.asarray(marked), step, 50)[0], 4)
    assert (marked[1:, :3] < -10**8).all()                   # no longer counted for scales 1, 2
    np.testing.assert_array_equal(marked[:, 3:], np.asarray(last)[:, 3:])


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


def test_reinit_replaces_exactly_the_planned_rows_from_the_planned_scale():
    V, C = 64, 8
    codebook = jax.random.normal(jax.random.key(1), (V, C))
    plan = jnp.full((V,), cb.KEEP, jnp.int32).at[jnp.array([0, 7, 8, 40, 63])].set(
        jnp.array([0, 1, 2, 2, 0]))
    # scale s holds vectors 100*(s+1) + row
    queries = [jnp.tile((100.0 * (s + 1) + jnp.arange(n))[:, None], (1, C))
               for s, n in enumerate((2, 8, 32))]
    new = np.asarray(cb.reinit_codes(codebook, plan, queries, jax.random.key(2)))
    keep = np.asarray(plan) == cb.KEEP
    np.testing.assert_array_equal(new[keep], np.asarray(codebook)[keep])   # bit-identical
    for v in np.flatnonzero(~keep):
        s = int(plan[v])
        assert (np.asarray(queries[s]) == new[v]).all(axis=1).any(), (v, s, new[v])


def test_dead_codes_draw_scales_evenly():
    V = 3000
    last = jnp.zeros((3, V), jnp.int32)
    plan = cb.plan_reinit(last, jnp.int32(100), 50, (0, 0, 0), jax.random.key(0))
    frac = np.bincount(np.asarray(plan), minlength=3) / V
    np.testing.assert_allclose(frac, [1 / 3] * 3, atol=0.04)
