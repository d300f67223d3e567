"""PyTorch-exact area / bicubic resize matrices.

`torch_resize_matrices.npz` holds torch 2.13 `F.interpolate(..., mode=m)` applied to identity
maps (so each entry `{m}_{in}_{out}` is the (out, in) matrix torch applies), generated once in a
separate scratch environment; torch is not a dependency.
"""
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from var_jax.quant.resize import area_matrix, area_resize, bicubic_matrix, bicubic_resize

TORCH = np.load(os.path.join(os.path.dirname(__file__), "torch_resize_matrices.npz"))
PAIRS = [(16, 13), (8, 5), (4, 3), (16, 1), (16, 3), (16, 10), (32, 24), (7, 3),
         (2, 16), (3, 16), (13, 16), (5, 8), (1, 16), (3, 7), (4, 4)]


@pytest.mark.parametrize("in_size,out_size", PAIRS)
def test_area_matrix_matches_torch(in_size, out_size):
    ref = TORCH[f"area_{in_size}_{out_size}"]
    np.testing.assert_allclose(area_matrix(in_size, out_size), ref, atol=1e-7)


@pytest.mark.parametrize("in_size,out_size", PAIRS)
def test_bicubic_matrix_matches_torch(in_size, out_size):
    ref = TORCH[f"bicubic_{in_size}_{out_size}"]
    err = np.abs(bicubic_matrix(in_size, out_size) - ref).max()
    assert err <= 2e-6, f"bicubic {in_size}->{out_size}: max abs err {err:.3g} vs torch"


@pytest.mark.parametrize("in_size,out_size", PAIRS)
def test_rows_sum_to_one(in_size, out_size):
    for fn in (area_matrix, bicubic_matrix):
        np.testing.assert_allclose(fn(in_size, out_size).sum(1), 1.0, atol=1e-6)


def test_area_windows_overlap_when_ratio_is_not_whole():
    # 16 -> 13: cell i covers floor(16i/13) .. ceil(16(i+1)/13)-1
    m = area_matrix(16, 13)
    assert np.flatnonzero(m[0]).tolist() == [0, 1]            # [0, ceil(16/13)=2)
    assert np.flatnonzero(m[1]).tolist() == [1, 2]            # [1, ceil(32/13)=3)
    assert np.flatnonzero(m[4]).tolist() == [4, 5, 6]         # [floor(64/13)=4, ceil(80/13)=7)
    assert np.flatnonzero(m[12]).tolist() == [14, 15]
    np.testing.assert_allclose(m[4, 4:7], 1 / 3)
    # 8 -> 5 and 4 -> 3
    assert [np.flatnonzero(r).tolist() for r in area_matrix(8, 5)] == [
        [0, 1], [1, 2, 3], [3, 4], [4, 5, 6], [6, 7]]
    assert [np.flatnonzero(r).tolist() for r in area_matrix(4, 3)] == [[0, 1], [1, 2], [2, 3]]


def test_bicubic_hand_computed_2_to_16():
    # out 0: src = 0.5*2/16 - 0.5 = -0.4375 -> base -1, t = 0.5625; taps -2,-1,0,1 clamp to 0,0,0,1
    a, t = -0.75, 0.5625
    near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1
    far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    w = [far(t + 1), near(t), near(1 - t), far(2 - t)]
    want = np.array([w[0] + w[1] + w[2], w[3]])
    np.testing.assert_allclose(bicubic_matrix(2, 16)[0], want, atol=1e-7)
    # identity when sizes agree
    np.testing.assert_array_equal(bicubic_matrix(5, 5), np.eye(5, dtype=np.float32))


def test_matrices_are_cached_and_read_only():
    assert area_matrix(16, 13) is area_matrix(16, 13)
    with pytest.raises(ValueError):
        bicubic_matrix(3, 16)[0, 0] = 1.0
    with pytest.raises(ValueError, match="must be >= 1"):
        area_matrix(0, 3)


def test_resize_applies_matrices_per_axis_nhwc():
    x = jax.random.normal(jax.random.key(0), (2, 13, 16, 3))
    y = bicubic_resize(x, (16, 5))
    chex.assert_shape(y, (2, 16, 5, 3))
    want = np.einsum("oh,pw,bhwc->bopc", bicubic_matrix(13, 16), bicubic_matrix(16, 5),
                     np.asarray(x, np.float64))
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    z = area_resize(x, (4, 3))
    np.testing.assert_allclose(np.asarray(z)[:, 0, 0], np.asarray(x)[:, 0:4, 0:6].mean((1, 2)),
                               atol=1e-6)
    assert area_resize(x, (13, 16)) is x
    with pytest.raises(ValueError, match="NHWC"):
        area_resize(x[0], (2, 2))


def test_bicubic_differs_from_jax_image_resize():
    # the reason these matrices exist: jax.image.resize's cubic kernel is not torch's
    x = jax.random.normal(jax.random.key(1), (1, 2, 2, 1))
    ours = bicubic_resize(x, (16, 16))
    theirs = jax.image.resize(x, (1, 16, 16, 1), method="cubic", antialias=False)
    assert float(jnp.abs(ours - theirs).max()) > 1e-2
