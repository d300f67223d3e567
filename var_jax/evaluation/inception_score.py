"""Inception Score: exp(E_x KL(p(y|x) || p(y))), averaged over contiguous splits (10 by default)."""
from __future__ import annotations

import numpy as np


def inception_score(logits_NK, num_splits: int = 10) -> tuple[float, float]:
    """(mean, std) over `num_splits` contiguous splits, float64 softmax of the 1008 logits.

    As the OpenAI evaluator (splits of 5,000 of 50,000): the splits follow the array's order, so
    each split should hold every class (`var-jax evaluate` interleaves the classes).
    """
    logits = np.asarray(logits_NK, np.float64)
    if logits.ndim != 2 or not np.all(np.isfinite(logits)):
        raise ValueError(f"logits must be a finite (N, classes) array, got shape {logits.shape}.")
    if not 1 <= num_splits <= logits.shape[0]:
        raise ValueError(f"num_splits={num_splits} must be in [1, N={logits.shape[0]}].")
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    scores = []
    for part in np.array_split(log_p, num_splits):
        log_marginal = np.log(np.exp(part).mean(0))
        kl = np.sum(np.exp(part) * (part - log_marginal), axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
