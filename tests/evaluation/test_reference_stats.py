"""Reference statistics: the OpenAI .npz in its forms, ours from a data source, round trips."""
import numpy as np
import pytest

from var_jax.evaluation import activations_of
from var_jax.evaluation.frechet import feature_statistics
from var_jax.evaluation.reference_stats import (ReferenceStats, read_reference_npz,
                                                reference_from_source, write_reference_npz)


def test_stored_statistics_win_and_images_give_the_pool(tmp_path, random_inception,
                                                        inception_io):
    imgs = inception_io["img64"]
    mu, sigma = np.arange(3.0), np.eye(3)
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma, mu_s=mu[:2], sigma_s=np.eye(2))
    only_stats = read_reference_npz(tmp_path / "stats.npz")
    np.testing.assert_array_equal(only_stats.mu, mu)
    assert only_stats.pool is None and only_stats.mu_s.shape == (2,)

    np.savez(tmp_path / "both.npz", arr_0=imgs, mu=mu, sigma=sigma)
    both = read_reference_npz(tmp_path / "both.npz", random_inception, "pytorch")
    np.testing.assert_array_equal(both.mu, mu)
    np.testing.assert_allclose(both.pool, inception_io["img64_pool3"], atol=1e-4)

    np.savez(tmp_path / "images.npz", arr_0=imgs)
    computed = read_reference_npz(tmp_path / "images.npz", random_inception, "pytorch")
    act = activations_of(random_inception, imgs, "pytorch")
    np.testing.assert_allclose(computed.mu, act.pool.mean(0), atol=1e-6)
    np.testing.assert_allclose(computed.sigma_s, np.cov(act.spatial, rowvar=False), atol=1e-6)
    with pytest.raises(ValueError, match="pass the Inception weights"):
        read_reference_npz(tmp_path / "images.npz")
    np.savez(tmp_path / "neither.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="neither images"):
        read_reference_npz(tmp_path / "neither.npz")


def test_write_then_read_round_trips(tmp_path):
    stats = ReferenceStats(np.ones(4), np.eye(4), None, None, np.zeros((5, 4), np.float32))
    write_reference_npz(tmp_path / "ref.npz", stats)
    back = read_reference_npz(tmp_path / "ref.npz")
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    np.testing.assert_array_equal(back.pool, stats.pool)
    assert back.mu_s is None


@pytest.mark.slow
def test_statistics_of_a_source_equal_the_two_pass_ones(tmp_path, random_inception):
    from var_jax.data.images import load_split

    data_dir = str(tmp_path / "tfds")
    stats = reference_from_source("digits", "clf_test", 16, random_inception, "tf",
                                  data_dir=data_dir, batch_size=5, keep=4, limit=12)
    images = load_split("digits", "clf_test", 16, data_dir=data_dir)[0][:12]
    u8 = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    act = activations_of(random_inception, u8, "tf", batch_size=5)
    mu, sigma = feature_statistics(act.pool)
    np.testing.assert_allclose(stats.mu, mu, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats.sigma, sigma, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(stats.pool, act.pool[:4], atol=1e-6)
    assert stats.sigma_s.shape == (2023, 2023)
