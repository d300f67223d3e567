"""VQGAN blocks against direct numpy transcriptions of the reference formulas."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from var_jax.nn.vae_blocks import (AttnBlock, Conv3x3, Downsample, ResnetBlock, Upsample,
                                  conv3x3)

RNG = np.random.default_rng(0)


def randomize(params):
    return jax.tree.map(lambda p: jnp.asarray(RNG.normal(size=p.shape), jnp.float32), params)


def init_apply(module, x):
    params = randomize(jax.eval_shape(module.init, jax.random.key(0), x))
    return params["params"], np.asarray(jax.jit(module.apply)(params, x), np.float64)


def np_group_norm(x, scale, bias, groups, eps=1e-6):
    B, H, W, C = x.shape
    g = x.reshape(B, H * W, groups, C // groups)
    mean = g.mean(axis=(1, 3), keepdims=True)
    var = g.var(axis=(1, 3), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(B, H, W, C) * scale + bias


def np_conv(x, kernel, bias, stride=1, pad=((1, 1), (1, 1))):
    x = np.pad(x, ((0, 0), pad[0], pad[1], (0, 0)))
    kh, kw = kernel.shape[:2]
    H = (x.shape[1] - kh) // stride + 1
    W = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], H, W, kernel.shape[3]))
    for i in range(H):
        for j in range(W):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, i, j] = np.einsum("bhwc,hwco->bo", patch, kernel)
    return out + bias


def f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


@pytest.mark.parametrize("strip_bytes", [None, 1, 2 * 5 * 3 * 4 * 2])   # whole, 1 row, 2 rows
def test_conv3x3_in_row_strips_is_the_whole_conv(strip_bytes):
    """Any strip height (7 rows in strips of 1 or 2, the last one shorter) gives the whole
    conv's result, which is torch's Conv2d(k=3, padding=1)."""
    x = np.asarray(RNG.normal(size=(2, 7, 5, 3)), np.float32)
    kernel, bias = RNG.normal(size=(3, 3, 3, 4)), RNG.normal(size=4)
    y = jax.jit(conv3x3, static_argnums=3)(x, jnp.asarray(kernel, jnp.float32),
                                           jnp.asarray(bias, jnp.float32), strip_bytes)
    np.testing.assert_allclose(np.asarray(y), np_conv(x.astype(np.float64), kernel, bias),
                               atol=1e-4)
    if strip_bytes is not None:
        whole = jax.jit(conv3x3)(x, jnp.asarray(kernel, jnp.float32),
                                 jnp.asarray(bias, jnp.float32))
        np.testing.assert_allclose(np.asarray(y), np.asarray(whole), rtol=1e-6, atol=1e-6)


def test_conv3x3_has_nn_convs_params_and_output():
    x = jnp.asarray(RNG.normal(size=(1, 5, 4, 3)), jnp.float32)
    params = Conv3x3(6).init(jax.random.key(1), x)
    want = nn.Conv(6, (3, 3), padding=((1, 1), (1, 1)))
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, want.init(jax.random.key(1), x))
    np.testing.assert_allclose(Conv3x3(6).apply(params, x), want.apply(params, x), atol=1e-5)


def test_downsample_pads_right_and_bottom_then_strided_conv():
    x = jnp.asarray(RNG.normal(size=(2, 6, 6, 3)), jnp.float32)
    p, y = init_apply(Downsample(), x)
    p = f64(p["conv"])
    want = np_conv(np.asarray(x, np.float64), p["kernel"], p["bias"], stride=2,
                   pad=((0, 1), (0, 1)))
    assert y.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(y, want, atol=1e-4)


def test_upsample_is_nearest_then_conv():
    x = jnp.asarray(RNG.normal(size=(1, 3, 2, 2)), jnp.float32)
    p, y = init_apply(Upsample(), x)
    p = f64(p["conv"])
    up = np.repeat(np.repeat(np.asarray(x, np.float64), 2, axis=1), 2, axis=2)
    np.testing.assert_allclose(y, np_conv(up, p["kernel"], p["bias"]), atol=1e-4)


def test_attention_block_matches_reference_formula():
    x = jnp.asarray(RNG.normal(size=(2, 3, 4, 32)), jnp.float32)
    p, y = init_apply(AttnBlock(norm_groups=8), x)
    p = f64(p)
    xn = np.asarray(x, np.float64)
    h = np_group_norm(xn, p["norm"]["scale"], p["norm"]["bias"], 8)
    qkv = np_conv(h, p["qkv"]["kernel"], p["qkv"]["bias"], pad=((0, 0), (0, 0)))
    q, k, v = (qkv[..., i * 32:(i + 1) * 32].reshape(2, 12, 32) for i in range(3))
    w = q @ k.transpose(0, 2, 1) / np.sqrt(32)
    w = np.exp(w - w.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = (w @ v).reshape(2, 3, 4, 32)
    want = xn + np_conv(o, p["proj_out"]["kernel"], p["proj_out"]["bias"], pad=((0, 0), (0, 0)))
    np.testing.assert_allclose(y, want, atol=2e-3, rtol=1e-4)


def test_resnet_block_shortcut_only_when_widths_differ():
    x = jnp.asarray(RNG.normal(size=(1, 4, 4, 32)), jnp.float32)
    same, _ = init_apply(ResnetBlock(32, norm_groups=8), x)
    wider, y = init_apply(ResnetBlock(64, norm_groups=8), x)
    assert "nin_shortcut" not in same and wider["nin_shortcut"]["kernel"].shape == (1, 1, 32, 64)
    p, xn = f64(wider), np.asarray(x, np.float64)
    silu = lambda a: a / (1 + np.exp(-a))
    h = np_conv(silu(np_group_norm(xn, p["norm1"]["scale"], p["norm1"]["bias"], 8)),
                p["conv1"]["kernel"], p["conv1"]["bias"])
    h = np_conv(silu(np_group_norm(h, p["norm2"]["scale"], p["norm2"]["bias"], 8)),
                p["conv2"]["kernel"], p["conv2"]["bias"])
    short = np_conv(xn, p["nin_shortcut"]["kernel"], p["nin_shortcut"]["bias"],
                    pad=((0, 0), (0, 0)))
    np.testing.assert_allclose(y, short + h, atol=2e-3, rtol=1e-4)
