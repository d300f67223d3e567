"""The demo's judge: accurate on real digits, Fréchet distance separates real from noise."""
import numpy as np
import pytest

from var_jax.demo.judge import DigitsJudge, score_samples, to_judge_pixels
from var_jax.evaluation.frechet import frechet_distance_of_features


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    imgs, labels = d.images[order], d.target[order]
    return (imgs[:700], labels[:700]), (imgs[1300:], labels[1300:])


@pytest.fixture(scope="module")
def judge(digits):
    (imgs, labels), _ = digits
    return DigitsJudge.fit(imgs.reshape(len(imgs), -1), labels, seed=0)


def _upscale_to_pm1(imgs_B88, side):
    """8x8 digits on 0..16 -> (B, side, side, 3) in [-1, 1], nearest-neighbour upscaled."""
    r = side // 8
    big = np.repeat(np.repeat(imgs_B88, r, 1), r, 2) / 8.0 - 1.0
    return np.repeat(big[..., None], 3, -1)


def test_to_judge_pixels_inverts_upscaling(digits):
    (imgs, _), _ = digits
    for side in (8, 16, 32):
        px = to_judge_pixels(_upscale_to_pm1(imgs[:5], side))
        np.testing.assert_allclose(px, imgs[:5].reshape(5, -1), atol=1e-9)
    px01 = to_judge_pixels((_upscale_to_pm1(imgs[:5], 16) + 1) / 2, value_range=(0.0, 1.0))
    np.testing.assert_allclose(px01, imgs[:5].reshape(5, -1), atol=1e-9)


def test_to_judge_pixels_rejects_bad_sides():
    with pytest.raises(ValueError, match="multiple of 8"):
        to_judge_pixels(np.zeros((1, 12, 12, 3)))


def test_judge_is_accurate_and_deterministic(digits, judge):
    _, (imgs, labels) = digits
    px = imgs.reshape(len(imgs), -1)
    acc = judge.accuracy(px, labels)
    assert acc > 0.9, f"held-out accuracy {acc:.3f}"
    (tr_imgs, tr_labels), _ = digits
    again = DigitsJudge.fit(tr_imgs.reshape(len(tr_imgs), -1), tr_labels, seed=0)
    np.testing.assert_array_equal(again.features(px), judge.features(px))


def test_frechet_distance_separates_real_from_noise(digits, judge):
    _, (imgs, _) = digits
    px = imgs.reshape(len(imgs), -1)
    half = len(px) // 2
    real_real = frechet_distance_of_features(judge.features(px[:half]), judge.features(px[half:]))
    noise = np.random.default_rng(1).uniform(0, 16, px[half:].shape)
    real_noise = frechet_distance_of_features(judge.features(px[:half]), judge.features(noise))
    assert 0 <= real_real < 0.1 * real_noise, f"real-real {real_real:.3f}, noise {real_noise:.3f}"
    same = frechet_distance_of_features(judge.features(px), judge.features(px))
    assert same == pytest.approx(0, abs=1e-4)


def test_frechet_distance_matches_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (20000, 3))
    b = rng.normal(1.0, 2.0, (20000, 3))
    # means differ by 1 per dim (3), traces 3 + 12 - 2 * 3 * sqrt(1 * 4) = 3
    assert frechet_distance_of_features(a, b) == pytest.approx(6.0, rel=0.05)


def test_real_digits_agree_with_their_labels_like_the_accuracy(digits, judge):
    _, (imgs, labels) = digits
    samples = _upscale_to_pm1(imgs, 16)
    scores = score_samples(judge, to_judge_pixels(samples), labels,
                           imgs.reshape(len(imgs), -1), labels)
    assert scores.class_agreement == pytest.approx(scores.heldout_accuracy, abs=1e-9)
    assert scores.frechet == pytest.approx(0.0, abs=1e-4)
    assert len(scores.per_class_agreement) == 10 and min(scores.per_class_agreement) > 0.7
