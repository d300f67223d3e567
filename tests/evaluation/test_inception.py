"""The Flax FID Inception against pytorch-fid's outputs on the golden random weights."""
import numpy as np
import pytest

from inception_fixtures import GOLDEN
from var_jax.data.augment import bilinear_matrix
from var_jax.evaluation import inception_activations, inception_features, load_inception
from var_jax.evaluation.features import resize_matrices


@pytest.mark.parametrize("size", [64, 256, 299])
def test_pool_and_logits_match_pytorch_fid(random_inception, inception_io, size):
    pool, logits = inception_features(random_inception, inception_io[f"img{size}"])
    assert pool.shape == (inception_io[f"img{size}"].shape[0], 2048)
    assert np.abs(pool - inception_io[f"img{size}_pool3"]).max() <= 1e-4
    assert np.abs(logits - inception_io[f"img{size}_logits"]).max() <= 1e-4


def test_tf_protocol_differs_slightly_and_drops_the_fc_bias(random_inception, inception_io,
                                                            random_inception_sd):
    imgs = inception_io["img256"]
    torch_act = inception_activations(random_inception, imgs, "pytorch")
    tf_act = inception_activations(random_inception, imgs, "tf")
    gap = np.abs(tf_act.pool - torch_act.pool).max()
    assert 1e-4 < gap < 0.2 * np.abs(torch_act.pool).max()
    W, b = random_inception_sd["fc.weight"], random_inception_sd["fc.bias"]
    np.testing.assert_allclose(tf_act.logits, tf_act.pool @ W.T, atol=1e-4)
    np.testing.assert_allclose(torch_act.logits, torch_act.pool @ W.T + b, atol=1e-4)
    assert tf_act.spatial.shape == (2, 17 * 17 * 7)


def test_tf1_resize_samples_without_half_pixel_centres():
    m = bilinear_matrix(4, 8, half_pixel=False)       # output i reads source i/2
    np.testing.assert_allclose(m[:4], [[1, 0, 0, 0], [.5, .5, 0, 0], [0, 1, 0, 0], [0, .5, .5, 0]])
    np.testing.assert_allclose(m[-1], [0, 0, 0, 1])
    rows, _ = resize_matrices(299, 299, "pytorch")
    np.testing.assert_array_equal(rows, np.eye(299, dtype=np.float32))
    with pytest.raises(ValueError, match="protocol='torch'"):
        resize_matrices(8, 8, "torch")


def test_strict_loading_names_bad_keys(random_inception_sd):
    sd = dict(random_inception_sd)
    del sd["Mixed_6a.branch3x3.conv.weight"]
    sd["Mixed_7c.branch1x1.conv.weight"] = np.zeros((320, 2048, 3, 3), np.float32)
    sd["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
    with pytest.raises(ValueError) as info:
        load_inception(sd)
    msg = str(info.value)
    assert "missing Mixed_6a.branch3x3.conv.weight" in msg
    assert "unexpected AuxLogits.fc.weight" in msg
    assert "Mixed_7c.branch1x1.conv.weight: (320, 2048, 3, 3) (want (320, 2048, 1, 1))" in msg


def test_a_pth_goes_through_the_safe_reader_and_is_checked():
    with pytest.raises(ValueError, match="vae.pth is not pytorch-fid's FID Inception"):
        load_inception(GOLDEN / "vae.pth")
    with pytest.raises(FileNotFoundError):
        load_inception(GOLDEN / "nope.pth")


def test_images_must_be_uint8(random_inception):
    with pytest.raises(ValueError, match="uint8 RGB"):
        inception_features(random_inception, np.zeros((1, 64, 64, 3), np.float32))


def test_fingerprint_is_of_the_arrays(random_inception_sd):
    sd = dict(random_inception_sd)
    fp = load_inception(sd)[1]
    sd["fc.bias"] = sd["fc.bias"] + 1
    assert load_inception(sd)[1] != fp and len(fp) == 64


def test_features_and_their_frechet_distance_are_deterministic(random_inception, inception_io):
    from var_jax.evaluation import feature_statistics, frechet_distance
    a = inception_activations(random_inception, inception_io["img64"])
    b = inception_activations(random_inception, inception_io["img64"])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    feats = a.pool[:, :64]
    stats = feature_statistics(feats), feature_statistics(feats[::-1] * 1.1 + 0.1)
    first = frechet_distance(*stats[0], *stats[1])
    assert first == frechet_distance(*stats[0], *stats[1]) and first > 0
