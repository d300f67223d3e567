"""LPIPS perceptual distance: weight-file plumbing (random weights of the right shapes), maths."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from var_jax.nn.perceptual import LPIPS, VGG16_STAGES, load_lpips_params, lpips_abstract_params


def _torch_style_weights(rng, vgg_prefix="features"):
    """Random weights under the names and (torch) layouts of torchvision + the lpips package."""
    sd, cin = {}, 3
    for s, (indices, width) in enumerate(VGG16_STAGES):
        for idx in indices:
            name = f"{vgg_prefix}.{idx}" if vgg_prefix == "features" else f"net.slice{s + 1}.{idx}"
            sd[f"{name}.weight"] = rng.normal(0, (2 / (9 * cin)) ** 0.5,
                                              (width, cin, 3, 3)).astype(np.float32)
            sd[f"{name}.bias"] = rng.normal(0, 0.01, (width,)).astype(np.float32)
            cin = width
    heads = {f"lin{i}.model.1.weight": rng.uniform(0, 0.1, (1, w, 1, 1)).astype(np.float32)
             for i, (_, w) in enumerate(VGG16_STAGES)}
    return sd, heads


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    vgg, heads = _torch_style_weights(np.random.default_rng(0))
    vgg["classifier.0.weight"] = np.zeros((4, 4), np.float32)   # torchvision extra: ignored
    np.savez(d / "vgg16.npz", **vgg)
    np.savez(d / "lin.npz", **heads)
    return d / "vgg16.npz", d / "lin.npz", vgg, heads


def test_two_files_load_with_layout_change(weight_files):
    vgg_path, lin_path, vgg, heads = weight_files
    params = load_lpips_params([vgg_path, lin_path])
    chex.assert_trees_all_equal_shapes(params, jax.tree.map(
        lambda s: np.zeros(s.shape), lpips_abstract_params()))
    np.testing.assert_array_equal(params["vgg"]["features_5"]["kernel"],
                                  vgg["features.5.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["lin_3"]["kernel"][0, 0, :, 0],
                                  heads["lin3.model.1.weight"][0, :, 0, 0])


def test_lpips_package_names_in_one_file(tmp_path):
    vgg, heads = _torch_style_weights(np.random.default_rng(1), vgg_prefix="net")
    np.savez(tmp_path / "lpips.npz", **vgg, **heads,
             **{"scaling_layer.shift": np.zeros((1, 3, 1, 1), np.float32)})
    params = load_lpips_params(tmp_path / "lpips.npz")
    np.testing.assert_array_equal(params["vgg"]["features_28"]["bias"], vgg["net.slice5.28.bias"])


def test_missing_heads_and_duplicates_are_errors(weight_files):
    vgg_path, lin_path, _, _ = weight_files
    with pytest.raises(ValueError, match="lin_0"):
        load_lpips_params(vgg_path)
    with pytest.raises(ValueError, match="more than one"):
        load_lpips_params([lin_path, lin_path])
    with pytest.raises(FileNotFoundError):
        load_lpips_params(str(lin_path) + ".missing")


def test_distance_properties(weight_files):
    params = load_lpips_params(weight_files[:2])
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.uniform(k1, (2, 16, 16, 3), minval=-1, maxval=1)
    b = jnp.clip(a + 0.3 * jax.random.normal(k2, a.shape), -1, 1)
    fn = jax.jit(lambda x, y: LPIPS().apply({"params": params}, x, y))
    same, diff = fn(a, a), fn(a, b)
    chex.assert_shape(diff, (2,))
    np.testing.assert_allclose(same, 0.0, atol=1e-6)
    assert np.all(np.asarray(diff) > 1e-4), diff
    np.testing.assert_allclose(fn(b, a), diff, rtol=1e-5)
    g = jax.grad(lambda y: fn(a, y).sum())(b)
    assert float(jnp.abs(g).sum()) > 0
