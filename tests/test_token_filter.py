"""Sort-free top-k/top-p filter vs the reference's masks (fixture from bench/ref_filter.py)."""
import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from var_jax.token_filter import filter_logits, kth_largest_key, ordered_bits, sample_categorical

FIXTURE = Path(__file__).parent / "fixtures" / "ref_filter_masks.npz"
CASES = ((900, 0.96), (0, 0.9), (50, 0.0), (900, 0.5), (1, 0.0))
_filter = jax.jit(filter_logits, static_argnums=(1, 2))


def _logits(fix, name):
    """The script's logits, regenerated: rng(7) normal(0, 3), 'ties' rounded to 0.25 steps."""
    rng = np.random.default_rng(7)
    for n, q in (("cont", 0.0), ("ties", 0.25)):
        lg = rng.normal(0, 3, (4, 50, 4096)).astype(np.float32)
        if q:
            lg = np.round(lg / q) * q
        if n == name:
            assert hashlib.sha256(lg.tobytes()).hexdigest() == str(fix[f"{n}_logits_sha256"])
            return lg


def _ref_mask(fix, name, k, p):
    return np.unpackbits(fix[f"{name}_k{k}_p{p}"], axis=-1, count=4096).astype(bool)


@pytest.mark.parametrize("top_k,top_p", CASES)
def test_masks_equal_the_reference_on_continuous_logits(top_k, top_p):
    fix = np.load(FIXTURE)
    lg = _logits(fix, "cont")
    got = np.asarray(_filter(lg, top_k, top_p))
    np.testing.assert_array_equal(np.isfinite(got), _ref_mask(fix, "cont", top_k, top_p))
    np.testing.assert_array_equal(got[np.isfinite(got)], lg[np.isfinite(got)])


@pytest.mark.parametrize("top_k,top_p", CASES)
def test_ties_are_kept_together(top_k, top_p):
    """With ties the reference may split a tied group at the top-p cut by sort order; the
    threshold rule keeps the whole group, so it is a superset differing only in that group
    (top-k alone, the reference also keeps all copies: equal)."""
    fix = np.load(FIXTURE)
    lg = _logits(fix, "ties")
    got = np.isfinite(np.asarray(_filter(lg, top_k, top_p)))
    want = _ref_mask(fix, "ties", top_k, top_p)
    if top_p == 0:
        np.testing.assert_array_equal(got, want)
        return
    assert not (want & ~got).any(), "the reference keeps a token the filter drops"
    cut = np.where(got, lg, np.inf).min(-1, keepdims=True)
    extra = got & ~want
    assert (lg[extra] == np.broadcast_to(cut, lg.shape)[extra]).all()
    assert (got == (lg >= cut)).all(), "kept set is a threshold: every copy of a tie together"


def test_disabled_and_edge_options():
    lg = np.random.default_rng(1).normal(size=(2, 3, 64)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(_filter(lg, 0, 0.0)), lg)
    np.testing.assert_array_equal(np.asarray(_filter(lg, 64, 0.0)), lg)   # k >= V: no-op
    np.testing.assert_array_equal(np.asarray(_filter(lg, 500, 0.0)), lg)
    one = np.asarray(_filter(lg, 1, 0.0))
    np.testing.assert_array_equal(np.isfinite(one), lg == lg.max(-1, keepdims=True))
    tiny_p = np.asarray(_filter(lg, 0, 1e-9))   # the most likely token is always kept
    np.testing.assert_array_equal(np.isfinite(tiny_p), lg == lg.max(-1, keepdims=True))


def test_ordered_bits_is_monotone_and_kth_is_exact():
    x = np.array([[-np.inf, -3e38, -1.5, -1e-45, -0.0, 0.0, 1e-45, 2.0, 3e38, np.inf]],
                 np.float32)
    keys = np.asarray(ordered_bits(jnp.asarray(x)))
    assert (np.diff(keys.astype(np.int64)) > 0).all()
    lg = np.random.default_rng(2).normal(size=(5, 300)).astype(np.float32)
    for k in (1, 7, 299, 300):
        got = np.asarray(kth_largest_key(ordered_bits(jnp.asarray(lg)), k))
        want = np.asarray(ordered_bits(jnp.asarray(-np.sort(-lg, -1)[:, k - 1:k])))
        np.testing.assert_array_equal(got, want)


def test_bfloat16_logits_keep_their_dtype():
    lg = jnp.asarray(np.random.default_rng(3).normal(size=(4, 128)), jnp.bfloat16)
    out = _filter(lg, 10, 0.9)
    assert out.dtype == jnp.bfloat16
    assert (np.isfinite(np.asarray(out, np.float32)).sum(-1) <= 10).all()


_sample = jax.jit(sample_categorical)


def test_inverse_cdf_draws_follow_the_softmax_and_skip_filtered_tokens():
    """200k draws over 12 tokens (3 filtered out): each frequency within 5 sigma of softmax."""
    rng = np.random.default_rng(4)
    lg = rng.normal(0, 1.5, 12).astype(np.float32)
    lg[[0, 5, 11]] = -np.inf
    n = 200_000
    u = jax.random.uniform(jax.random.key(0), (n,))
    idx = np.asarray(_sample(u, jnp.broadcast_to(jnp.asarray(lg), (n, 12))))
    p = np.exp(lg - lg.max())
    p /= p.sum()
    freq = np.bincount(idx, minlength=12) / n
    assert (freq[[0, 5, 11]] == 0).all()
    assert (np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12).all(), (freq, p)


def test_inverse_cdf_edges_are_exact():
    """u = 0 draws the first kept token; u just below 1 the last kept one, never a filtered
    tail; one kept token (top-k = 1) is always drawn; u = 1/2 draws where the CDF crosses it."""
    lg = np.full((3, 4096), -np.inf, np.float32)
    lg[0, [7, 100, 4000]] = (0.0, 1.0, 2.0)
    lg[1, 4095] = 3.0
    lg[2] = np.random.default_rng(5).normal(size=4096)
    below_one = np.float32(1.0) - np.float32(2.0 ** -24)
    for u, want0 in ((0.0, 7), (below_one, 4000)):
        got = np.asarray(_sample(jnp.full((3,), u, jnp.float32), jnp.asarray(lg)))
        assert got[0] == want0 and got[1] == 4095
    one = np.asarray(_filter(lg[2:], 1, 0.0))
    for u in (0.0, 0.5, below_one):
        assert np.asarray(_sample(jnp.full((1,), u, jnp.float32), jnp.asarray(one)))[0] == \
            int(np.argmax(lg[2]))
    # the median draw of a continuous row: the token where the CDF crosses 1/2
    p = np.exp(lg[2] - lg[2].max())
    cdf = np.cumsum(p / p.sum())
    got = int(np.asarray(_sample(jnp.full((1,), 0.5, jnp.float32), jnp.asarray(lg[2:])))[0])
    assert cdf[got - 1] <= 0.5 + 1e-5 and cdf[got] >= 0.5 - 1e-5
