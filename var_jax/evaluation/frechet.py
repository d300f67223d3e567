"""Fréchet distance between Gaussians, float64 numpy, through symmetric eigendecompositions.

tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, which equal those
of the symmetric PSD R^T S2 R for any R R^T = S1: `eigvalsh` gives them (real, no Schur
iterations), also for the rank-deficient covariances of small sample sets where
scipy.linalg.sqrtm(S1 @ S2) needs an eps ridge. scipy is therefore not a dependency (the tests
compare against it).
"""
from __future__ import annotations

import numpy as np


def feature_statistics(feats_ND) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D), unbiased as np.cov) of N feature vectors, float64."""
    feats = np.asarray(feats_ND, np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need features (N, D) with N >= 2 for a covariance, got shape "
                         f"{feats.shape}.")
    return feats.mean(0), np.cov(feats, rowvar=False)


def sqrtm_psd(m_DD) -> np.ndarray:
    """The symmetric PSD square root of a symmetric PSD matrix (negative round-off clipped)."""
    m = np.asarray(m_DD, np.float64)
    vals, vecs = np.linalg.eigh((m + m.T) * 0.5)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def trace_sqrt_product(sigma1, sigma2) -> float:
    """tr((sigma1 @ sigma2)^(1/2)) for symmetric PSD sigma1, sigma2.

    With any factor R R^T = sigma1, the eigenvalues of sigma1 sigma2 are those of the symmetric
    R^T sigma2 R. R is the Cholesky factor (fast), or for a singular sigma1 its PSD square root.
    """
    s1, s2 = (np.asarray(s, np.float64) for s in (sigma1, sigma2))
    s1 = (s1 + s1.T) * 0.5
    try:
        root = np.linalg.cholesky(s1)
    except np.linalg.LinAlgError:
        root = sqrtm_psd(s1)
    inner = root.T @ s2 @ root
    vals = np.linalg.eigvalsh((inner + inner.T) * 0.5)
    return float(np.sum(np.sqrt(np.clip(vals, 0.0, None))))


def _check(name: str, a, ndim: int) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.ndim != ndim or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a finite {'vector' if ndim == 1 else 'matrix'}, got "
                         f"shape {a.shape}" + ("" if np.all(np.isfinite(a)) else " with NaN/inf"))
    return a


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), float64 (FID on Inception
    pool features, sFID on spatial ones)."""
    mu1, mu2 = _check("mu1", mu1, 1), _check("mu2", mu2, 1)
    sigma1, sigma2 = _check("sigma1", sigma1, 2), _check("sigma2", sigma2, 2)
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"statistics disagree in size: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                         f"mu2 {mu2.shape}, sigma2 {sigma2.shape}; compute both from the same "
                         "features (e.g. Inception pool, 2048-d).")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) \
        - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return max(float(value), 0.0)    # identical statistics can round to a tiny negative


def frechet_distance_of_features(feats_a_ND, feats_b_MD) -> float:
    """frechet_distance between the Gaussians fitted to two feature sets (N, D) and (M, D)."""
    return frechet_distance(*feature_statistics(feats_a_ND), *feature_statistics(feats_b_MD))
