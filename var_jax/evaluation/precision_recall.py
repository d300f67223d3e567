"""Improved precision and recall (Kynkäänniemi et al. 2019): k-NN balls as manifolds, batched JAX.

A set's manifold is the union of balls around its points, each of radius the distance to its
k-th nearest other point (k = 3). Precision: share of samples inside the reference manifold;
recall: share of references inside the sample manifold. Squared Euclidean distances, float32
at full matmul precision (the OpenAI evaluator tries float16 first; ties aside, the same).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

K_NEIGHBOURS = 3


def _sq_dists(a_RD, b_ND):
    ab = jnp.matmul(a_RD, b_ND.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(jnp.sum(a_RD ** 2, 1)[:, None] - 2.0 * ab + jnp.sum(b_ND ** 2, 1)[None],
                       0.0)


@functools.partial(jax.jit, static_argnames="k")
def _kth_dist(rows_RD, all_ND, k: int):
    # the row itself is among `all` at distance 0, so the k-th other point is the (k+1)-th
    return -jax.lax.top_k(-_sq_dists(rows_RD, all_ND), k + 1)[0][:, k]


@jax.jit
def _inside(rows_RD, ref_ND, ref_radii_N):
    return jnp.any(_sq_dists(rows_RD, ref_ND) <= ref_radii_N[None], axis=1)


def _blocks(fn, rows_ND, block: int, *args) -> np.ndarray:
    """fn over row blocks of one static shape (the last one padded), concatenated."""
    n = rows_ND.shape[0]
    out = []
    for start in range(0, n, block):
        part = rows_ND[start:start + block]
        m = part.shape[0]
        if m < block and n > block:
            part = np.concatenate([part, np.repeat(part[-1:], block - m, 0)])
        out.append(np.asarray(fn(part, *args))[:m])
    return np.concatenate(out)


def _check(name: str, feats) -> np.ndarray:
    feats = np.asarray(feats, np.float32)
    if feats.ndim != 2 or feats.shape[0] <= K_NEIGHBOURS:
        raise ValueError(f"{name} must be (N, D) features with N > {K_NEIGHBOURS}, got shape "
                         f"{feats.shape}.")
    return feats


def manifold_radii(feats_ND, k: int = K_NEIGHBOURS, block: int = 1024) -> np.ndarray:
    """(N,) squared distance of each point to its k-th nearest other point."""
    feats = _check("features", feats_ND)
    all_ND = jnp.asarray(feats)
    return _blocks(lambda rows: _kth_dist(rows, all_ND, k), feats, block)


def inside_manifold(feats_MD, ref_ND, ref_radii_N, block: int = 1024) -> np.ndarray:
    """(M,) bool: whether each point lies in some reference ball."""
    ref, radii = jnp.asarray(ref_ND, jnp.float32), jnp.asarray(ref_radii_N, jnp.float32)
    return _blocks(lambda rows: _inside(rows, ref, radii), np.asarray(feats_MD, np.float32),
                   block)


def precision_recall(real_ND, fake_MD, k: int = K_NEIGHBOURS, block: int = 1024
                     ) -> tuple[float, float]:
    """(precision, recall) of samples `fake` against references `real` (Inception pool feats)."""
    real, fake = _check("reference features", real_ND), _check("sample features", fake_MD)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: reference {real.shape}, samples {fake.shape}.")
    precision = inside_manifold(fake, real, manifold_radii(real, k, block), block).mean()
    recall = inside_manifold(real, fake, manifold_radii(fake, k, block), block).mean()
    return float(precision), float(recall)
