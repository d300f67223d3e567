"""Zero-shot editing: kept tokens are the image's; full mask = sampling; empty mask = the image."""
import chex
import jax
import numpy as np
import pytest

from golden import GOLDEN
from var_jax import sample
from var_jax.data.augment import bilinear_matrix
from var_jax.editing import edit, scale_masks

OPTS = dict(cfg=1.5, top_k=16, top_p=0.9, return_indices=True)


def _image_and_tokens():
    io = np.load(GOLDEN / "vae_io.npz")
    imgs = ((io["img"].transpose(0, 2, 3, 1) + 1.0) / 2.0).clip(0.0, 1.0)
    return imgs, io["idx_BL"], io["recon"].transpose(0, 2, 3, 1)


def test_bilinear_matrix_matches_torch_rule():
    # torch: F.interpolate(arange(4.), size=2, mode="bilinear") -> [0.5, 2.5]; size=3 from 4.
    np.testing.assert_allclose(bilinear_matrix(4, 2) @ np.arange(4.0), [0.5, 2.5])
    np.testing.assert_allclose(bilinear_matrix(4, 3) @ np.arange(4.0), [1 / 6, 1.5, 17 / 6],
                               rtol=1e-6)
    np.testing.assert_allclose(bilinear_matrix(4, 4), np.eye(4))


def test_scale_masks():
    mask = np.zeros((1, 64, 64), bool)
    mask[:, :, 32:] = True                              # regenerate the right half
    m = scale_masks(mask, (1, 2, 3, 4))
    assert [x.shape for x in m] == [(1, 1), (1, 4), (1, 9), (1, 16)]
    assert not m[0].any()                               # the 1x1 scale keeps the image's token
    np.testing.assert_array_equal(m[1].reshape(2, 2), [[False, True], [False, True]])
    np.testing.assert_array_equal(m[3].reshape(4, 4), np.tile([False, False, True, True], (4, 1)))
    assert scale_masks(np.ones((4, 4), bool), (1, 2, 3, 4), keep_first=False)[0].all()
    with pytest.raises(ValueError, match="mask must be a bool array"):
        scale_masks(np.ones((4, 4)), (1, 2))


def test_editing_keeps_unmasked_tokens_and_an_empty_mask_is_the_image(golden_var,
                                                                       golden_vae):
    var_cfg, var_params, _, _ = golden_var("var_tiny_l2norm")
    vae_cfg, vae_params = golden_vae
    imgs, gt_idx, recon = _image_and_tokens()
    labels = np.array([2, 7])
    mask = np.zeros((2, 64, 64), bool)
    mask[0, 16:48, 16:48] = True                        # in-paint the centre of image 0
    mask[1, :, :24] = True                              # out-paint the left of image 1
    key = jax.random.key(4)
    out, idx = edit(var_params, vae_params, var_cfg, vae_cfg, imgs, mask, labels, rng=key, **OPTS)
    chex.assert_shape(out, (2, 64, 64, 3))
    sample_here = np.concatenate(scale_masks(mask, var_cfg.patch_nums), axis=1)
    assert sample_here.any(axis=1).all() and (~sample_here).any(axis=1).all()
    np.testing.assert_array_equal(np.asarray(idx)[~sample_here], gt_idx[~sample_here])
    assert (np.asarray(idx)[sample_here] != gt_idx[sample_here]).any()

    out, idx = edit(var_params, vae_params, var_cfg, vae_cfg, imgs, np.zeros((64, 64), bool),
                    labels, rng=key, **OPTS)
    np.testing.assert_array_equal(np.asarray(idx), gt_idx)
    err = np.abs(np.asarray(out) - (recon + 1.0) / 2.0).max()
    assert err < 1e-4, f"empty mask: image differs from the tokenizer reconstruction by {err:.3g}"


def test_a_full_mask_reduces_to_sampling(golden_var, golden_vae):
    var_cfg, var_params, _, _ = golden_var("var_tiny_l2norm")
    vae_cfg, vae_params = golden_vae
    imgs, _, _ = _image_and_tokens()
    labels, keys = np.array([5, 1]), jax.random.split(jax.random.key(9), 2)
    full = [np.ones((2, pn * pn), bool) for pn in var_cfg.patch_nums]
    out, idx = edit(var_params, vae_params, var_cfg, vae_cfg, imgs, full, labels, rng=keys, **OPTS)
    want_imgs, want_idx = sample(var_params, vae_params, var_cfg, vae_cfg, labels, rng=keys,
                                 **OPTS)
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(want_idx))
    chex.assert_trees_all_close(out, want_imgs, atol=1e-5)
    with pytest.raises(ValueError, match="per-scale masks must have shapes"):
        edit(var_params, vae_params, var_cfg, vae_cfg, imgs, full[:-1], labels, rng=keys)
    with pytest.raises(ValueError, match=r"images must be in \[0, 1\]"):
        edit(var_params, vae_params, var_cfg, vae_cfg, imgs * 2 - 1, full, labels, rng=keys)
