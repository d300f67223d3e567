"""Fréchet distance vs scipy, Inception Score by hand, precision/recall vs brute-force numpy."""
import numpy as np
import pytest
import scipy.linalg

from var_jax.evaluation.frechet import (feature_statistics, frechet_distance, sqrtm_psd,
                                        trace_sqrt_product)
from var_jax.evaluation.inception_score import inception_score
from var_jax.evaluation.precision_recall import manifold_radii, precision_recall


def _scipy_fid(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def _covariances(rng, d, n, spread):
    """Covariance of n samples with eigen-spectrum spanning `spread` decades."""
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    x = rng.standard_normal((n, d)) * np.logspace(0, -spread, d) @ basis.T
    return feature_statistics(x + rng.standard_normal(d))


@pytest.mark.parametrize("d,n,spread", [(16, 200, 0), (64, 500, 3), (64, 2000, 6)])
def test_frechet_matches_scipy(d, n, spread):
    rng = np.random.default_rng(d + n)
    mu1, s1 = _covariances(rng, d, n, spread)
    mu2, s2 = _covariances(rng, d, n, spread)
    assert np.linalg.cond(s1) > 10 ** spread
    ours, ref = frechet_distance(mu1, s1, mu2, s2), _scipy_fid(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert trace_sqrt_product(s1, s2) == pytest.approx(
        np.trace(scipy.linalg.sqrtm(s1 @ s2).real), rel=1e-6)
    np.testing.assert_allclose(sqrtm_psd(s1), scipy.linalg.sqrtm(s1).real,
                               rtol=0, atol=1e-6 * np.abs(sqrtm_psd(s1)).max())


def test_frechet_on_near_singular_covariances_matches_scipy_with_its_ridge():
    # fewer samples than dimensions: rank-deficient, as 50 images in 2048-d
    rng = np.random.default_rng(0)
    mu1, s1 = feature_statistics(rng.standard_normal((40, 96)))
    mu2, s2 = feature_statistics(rng.standard_normal((40, 96)) * 1.5 + 0.2)
    ours = frechet_distance(mu1, s1, mu2, s2)
    eps = 1e-10 * np.eye(96)       # a ridge small enough to leave the value, big enough for scipy
    ref = _scipy_fid(mu1, s1 + eps, mu2, s2 + eps)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_of_known_gaussians():
    # N(0, I) vs N(1, 4I) in d dims: d*1 + d*(1 + 4 - 2*2) = 2d
    d = 8
    assert frechet_distance(np.zeros(d), np.eye(d), np.ones(d), 4 * np.eye(d)) == \
        pytest.approx(2 * d)


def test_frechet_rejects_mismatched_or_nonfinite_stats():
    with pytest.raises(ValueError, match="disagree in size"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(3), np.eye(3) * np.nan, np.zeros(3), np.eye(3))


def test_inception_score_bounds_and_splits():
    n, k = 100, 10
    confident_distinct = np.full((n, k), -1e3)
    confident_distinct[np.arange(n), np.arange(n) % k] = 0.0
    assert inception_score(confident_distinct)[0] == pytest.approx(k, rel=1e-6)
    assert inception_score(np.zeros((n, k)))[0] == pytest.approx(1.0)
    logits = np.random.default_rng(0).standard_normal((n, k)) * 3
    mean, std = inception_score(logits, num_splits=4)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    by_hand = [np.exp(np.mean(np.sum(q * (np.log(q) - np.log(q.mean(0))), 1)))
               for q in np.split(p, 4)]
    assert (mean, std) == pytest.approx((np.mean(by_hand), np.std(by_hand)), rel=1e-9)
    with pytest.raises(ValueError, match="num_splits=200"):
        inception_score(logits, num_splits=200)


def _brute_force_pr(real, fake, k=3):
    def d2(a, b):
        return ((a[:, None, :].astype(np.float64) - b[None].astype(np.float64)) ** 2).sum(-1)

    r_real = np.sort(d2(real, real), 1)[:, k]
    r_fake = np.sort(d2(fake, fake), 1)[:, k]
    precision = np.mean(np.any(d2(fake, real) <= r_real[None], 1))
    recall = np.mean(np.any(d2(real, fake) <= r_fake[None], 1))
    return precision, recall, r_real


@pytest.mark.parametrize("block", [7, 1024])
def test_precision_recall_matches_brute_force(block):
    rng = np.random.default_rng(1)
    real = rng.standard_normal((150, 32)).astype(np.float32)
    fake = (rng.standard_normal((120, 32)) * 1.3 + 0.3).astype(np.float32)
    precision, recall, r_real = _brute_force_pr(real, fake)
    np.testing.assert_allclose(manifold_radii(real, block=block), r_real, rtol=1e-4)
    assert precision_recall(real, fake, block=block) == (precision, recall)
    assert 0.0 < precision < 1.0 and 0.0 < recall < 1.0
    assert precision_recall(real, real, block=block) == (1.0, 1.0)

