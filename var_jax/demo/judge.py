"""The demo's quality number: a digit classifier trained on held-out real digits judges samples."""
from __future__ import annotations

import dataclasses

import numpy as np

from var_jax.evaluation.frechet import frechet_distance_of_features

JUDGE_SIDE = 8          # the classifier sees 8x8 images, like scikit-learn's digits
JUDGE_MAX = 16.0        # on the digits' own 0..16 intensity scale


def to_judge_pixels(imgs_BHWC, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Images of any side divisible by 8 -> (B, 64) float64 in [0, 16]: grey, area-pooled to 8x8.

    `value_range` is the (black, white) pair of the input: (-1, 1) for the data stream and the
    tokenizer, (0, 1) for the sampler's output.
    """
    imgs = np.asarray(imgs_BHWC, np.float64)
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    if imgs.ndim != 4:
        raise ValueError(f"expected images (B, H, W, C) or (B, H, W), got shape {imgs.shape}.")
    b, h, w, _ = imgs.shape
    if h % JUDGE_SIDE or w % JUDGE_SIDE:
        raise ValueError(f"image side {h}x{w} is not a multiple of {JUDGE_SIDE}; the judge "
                         f"area-pools to {JUDGE_SIDE}x{JUDGE_SIDE}, so use e.g. 16, 32 or 64 px.")
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range={value_range} must be (black, white) with white > black.")
    grey_BHW = imgs.mean(-1)
    n = JUDGE_SIDE
    pooled = grey_BHW.reshape(b, n, h // n, n, w // n).mean((2, 4))
    return np.clip((pooled - lo) / (hi - lo) * JUDGE_MAX, 0.0, JUDGE_MAX).reshape(b, -1)


@dataclasses.dataclass(frozen=True)
class DigitsJudge:
    """A one-hidden-layer MLP on 8x8 digits; its hidden layer is the Fréchet feature space."""

    classifier: object  # a fitted sklearn.neural_network.MLPClassifier

    @classmethod
    def fit(cls, pixels_B64: np.ndarray, labels_B: np.ndarray, *, seed: int = 0,
            hidden: int = 64) -> "DigitsJudge":
        """Train on real digits (`to_judge_pixels` output); deterministic given `seed`."""
        # local: scikit-learn only for the digits demo's judge
        from sklearn.neural_network import MLPClassifier
        from threadpoolctl import threadpool_limits

        pixels_B64, labels_B = _check_pixels(pixels_B64), np.asarray(labels_B)
        if labels_B.shape != (pixels_B64.shape[0],):
            raise ValueError(f"labels shape {labels_B.shape} does not match "
                             f"{pixels_B64.shape[0]} images.")
        if len(np.unique(labels_B)) < 2:
            raise ValueError("the judge needs real digits of at least two classes to train on.")
        clf = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-2, solver="lbfgs",
                            max_iter=1000, random_state=seed)
        # One BLAS thread: this small fit takes 0.5 s so, but ~15 s when its threads compete
        # with JAX's for two busy cores.
        with threadpool_limits(1):
            clf.fit(pixels_B64 / JUDGE_MAX, labels_B)
        return cls(clf)

    def predict(self, pixels_B64: np.ndarray) -> np.ndarray:
        """(B,) predicted class of each image."""
        return self.classifier.predict(_check_pixels(pixels_B64) / JUDGE_MAX)

    def accuracy(self, pixels_B64: np.ndarray, labels_B: np.ndarray) -> float:
        """Share of images classified as their label."""
        return float(np.mean(self.predict(pixels_B64) == np.asarray(labels_B)))

    def features(self, pixels_B64: np.ndarray) -> np.ndarray:
        """(B, hidden) ReLU activations of the hidden layer."""
        x = _check_pixels(pixels_B64) / JUDGE_MAX
        w, b = self.classifier.coefs_[0], self.classifier.intercepts_[0]
        return np.maximum(x @ w + b, 0.0)


def _check_pixels(pixels_B64) -> np.ndarray:
    pixels_B64 = np.asarray(pixels_B64, np.float64)
    if pixels_B64.ndim != 2 or pixels_B64.shape[1] != JUDGE_SIDE * JUDGE_SIDE:
        raise ValueError(f"judge input must be (B, {JUDGE_SIDE * JUDGE_SIDE}) pixels from "
                         f"to_judge_pixels, got shape {pixels_B64.shape}.")
    return pixels_B64


@dataclasses.dataclass(frozen=True)
class Scores:
    """What the demo reports about its samples."""

    class_agreement: float        # share of samples the judge labels as the class asked for
    per_class_agreement: tuple    # the same per class 0..9 (nan for a class not asked for)
    heldout_accuracy: float       # the judge's accuracy on held-out real digits
    frechet: float                # Fréchet distance samples vs held-out real, judge features
                                  # (var_jax.evaluation's, as FID)
    num_samples: int


def score_samples(judge: DigitsJudge, sample_pixels_B64: np.ndarray, asked_B: np.ndarray,
                  real_pixels_N64: np.ndarray, real_labels_N: np.ndarray) -> Scores:
    """Judge generated digits against the classes asked for and against held-out real digits."""
    asked_B = np.asarray(asked_B)
    hit_B = judge.predict(sample_pixels_B64) == asked_B
    classes = np.unique(np.asarray(real_labels_N))
    per_class = tuple(float(hit_B[asked_B == c].mean()) if np.any(asked_B == c) else float("nan")
                      for c in classes)
    return Scores(
        class_agreement=float(hit_B.mean()),
        per_class_agreement=per_class,
        heldout_accuracy=judge.accuracy(real_pixels_N64, real_labels_N),
        frechet=frechet_distance_of_features(judge.features(sample_pixels_B64),
                                             judge.features(real_pixels_N64)),
        num_samples=int(len(asked_B)),
    )
