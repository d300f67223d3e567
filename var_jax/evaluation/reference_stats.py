"""Reference statistics: the OpenAI evaluator's reference batch `.npz`, or computed from a source.

The OpenAI format (e.g. VIRTUAL_imagenet256_labeled.npz): `arr_0` uint8 (N, H, W, 3) images
(10,000 for precision/recall) and optionally `mu`, `sigma` (pool, 2048-d) and `mu_s`, `sigma_s`
(spatial, 2023-d) of the whole dataset; as the evaluator, stored statistics win over arr_0's.
Ours add `pool` (the reference pool features, for precision/recall without the images).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from var_jax.atomic import write_npz
from var_jax.evaluation.features import activations_of, check_images, inception_activations
from var_jax.evaluation.frechet import feature_statistics
from var_jax.image_io import to_uint8

DEFAULT_KEEP = 10_000     # reference pool features kept for precision/recall (as the evaluator)


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
    mu: np.ndarray            # (2048,) float64
    sigma: np.ndarray         # (2048, 2048)
    mu_s: np.ndarray | None   # (2023,) spatial, for sFID (None when unknown)
    sigma_s: np.ndarray | None
    pool: np.ndarray | None   # (M, 2048) float32 reference features for precision/recall


def stats_from_activations(act, keep: int = DEFAULT_KEEP) -> ReferenceStats:
    mu, sigma = feature_statistics(act.pool)
    mu_s, sigma_s = feature_statistics(act.spatial)
    return ReferenceStats(mu, sigma, mu_s, sigma_s, np.asarray(act.pool[:keep], np.float32))


def read_reference_npz(path: str | os.PathLike, params=None, protocol: str = "tf",
                       batch_size: int = 100) -> ReferenceStats:
    """Read a reference `.npz`; Inception `params` are needed when it holds images (arr_0)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no reference batch at {path!r}")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    pool = data.get("pool")
    if "arr_0" in data and pool is None:
        if params is None:
            raise ValueError(f"{path} holds images (arr_0): pass the Inception weights to embed "
                             "them.")
        act = activations_of(params, check_images(data["arr_0"]), protocol, batch_size)
        computed = stats_from_activations(act, keep=len(act.pool))
        pool = computed.pool
    else:
        computed = None
    if "mu" in data and "sigma" in data:
        return ReferenceStats(data["mu"].astype(np.float64), data["sigma"].astype(np.float64),
                              data.get("mu_s"), data.get("sigma_s"), pool)
    if computed is None:
        raise ValueError(f"{path} has neither images (arr_0) nor statistics (mu, sigma); keys: "
                         f"{sorted(data)}.")
    return computed


def write_reference_npz(path: str | os.PathLike, stats: ReferenceStats) -> None:
    arrays = {k: v for k, v in dataclasses.asdict(stats).items() if v is not None}
    write_npz(path, **arrays)


class _RunningMoments:
    """Mean and covariance over batches, float64, shifted by the first batch's mean."""

    def __init__(self):
        self.n, self.shift, self.s1, self.s2 = 0, None, None, None

    def add(self, x_BD) -> None:
        x = np.asarray(x_BD, np.float64)
        if self.shift is None:
            self.shift = x.mean(0)
            self.s1 = np.zeros_like(self.shift)
            self.s2 = np.zeros((x.shape[1], x.shape[1]))
        y = x - self.shift
        self.n += len(x)
        self.s1 += y.sum(0)
        self.s2 += y.T @ y

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"need at least 2 reference images, got {self.n}.")
        m = self.s1 / self.n
        return self.shift + m, (self.s2 - self.n * np.outer(m, m)) / (self.n - 1)


def reference_from_source(source: str, split: str, image_size: int, params,
                          protocol: str = "tf", *, data_dir: str | None = None,
                          manual_dir: str | None = None, batch_size: int = 100,
                          keep: int = DEFAULT_KEEP, limit: int | None = None) -> ReferenceStats:
    """Stats of a var_jax data source ("imagenet2012", "folder:<path>", ...) at `image_size`
    (the eval centre crop), streamed: every image for mu/sigma, the first `keep` for P/R."""
    # local: the data pipeline (Grain, TFDS builders) only for stats of a data source
    from var_jax.data.images import make_image_stream

    stream = make_image_stream(source, split, image_size, batch_size, 0, False, data_dir,
                               manual_dir, 0, 1)
    pool_m, spatial_m, kept, seen = _RunningMoments(), _RunningMoments(), [], 0
    try:
        for batch in stream:
            imgs = batch["image"][batch["mask"]]
            if limit is not None:
                imgs = imgs[:max(limit - seen, 0)]
            if len(imgs) == 0:
                break
            act = inception_activations(params, to_uint8(imgs, low=-1.0), protocol)
            pool_m.add(act.pool)
            spatial_m.add(act.spatial)
            kept.append(act.pool[:max(keep - seen, 0)])
            seen += len(imgs)
    finally:
        stream.close()
    return ReferenceStats(*pool_m.result(), *spatial_m.result(), np.concatenate(kept))
