"""Multi-scale residual VQ: parity with the reference quantizer, properties, errors, jit.

`msvq_torch_reference.npz` was produced once, in a scratch environment, by the reference
VectorQuantizer2 maths (torch 2.13, float32) on random latents 8x8 with patch_nums
(1, 2, 3, 5, 8), V=32, C=8: for each setting `name/` it holds the inputs (f, codebook, phi
weights OIHW), the indices, running f_hats, teacher-forcing input, vq loss, and the gradients
of vq_loss + sum(f_hat_st * cotangent) with respect to f, the codebook and the phis.
"""
import functools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from var_jax.configs import VQVAEConfig
from var_jax.quant import msvq

REF = np.load(os.path.join(os.path.dirname(__file__), "msvq_torch_reference.npz"))
SETTINGS = [("share4", 4, False), ("share0", 0, False), ("share1", 1, False),
            ("share3_znorm", 3, True)]


def make_cfg(share=4, znorm=False, patch_nums=(1, 2, 3, 5, 8), vocab=32):
    return VQVAEConfig(vocab_size=vocab, z_channels=8, ch=32, ch_mult=(1, 1, 2, 4),
                       patch_nums=patch_nums, image_size=8 * patch_nums[-1],
                       share_quant_resi=share, using_znorm=znorm)


def nhwc(a):
    return jnp.asarray(a.transpose(0, 2, 3, 1))


def ref_inputs(name):
    g = lambda k: REF[f"{name}/{k}"]
    phis = [(jnp.asarray(w.transpose(2, 3, 1, 0)), jnp.asarray(b))
            for w, b in zip(g("phi_w"), g("phi_b"))]
    return g, nhwc(g("f")), jnp.asarray(g("codebook")), phis


def random_quantizer(cfg, seed):
    rng, C = np.random.default_rng(seed), cfg.z_channels
    codebook = jnp.asarray(rng.normal(size=(cfg.vocab_size, C)) * 0.6, jnp.float32)
    phis = [(jnp.asarray(rng.normal(size=(3, 3, C, C)) * 0.2, jnp.float32),
             jnp.asarray(rng.normal(size=(C,)) * 0.1, jnp.float32)) for _ in range(cfg.num_phi)]
    return codebook, phis


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def jitted(fn, cfg):
    """Tests run the maths jitted: one compile instead of one per eager op."""
    return jax.jit(functools.partial(fn, cfg=cfg))


@pytest.mark.parametrize("name,share,znorm", SETTINGS)
def test_matches_reference_forward_and_gradients(name, share, znorm):
    cfg = make_cfg(share, znorm)
    g, f, codebook, phis = ref_inputs(name)
    cot = nhwc(g("cotangent"))

    @jax.jit
    def run(f, codebook, phis):
        def objective(f, codebook, phis):
            q = msvq.quantize_train(f, codebook, phis, cfg)
            return q["vq_loss"] + jnp.sum(q["f_hat"] * cot), q

        (_, q), grads = jax.value_and_grad(objective, (0, 1, 2), has_aux=True)(f, codebook, phis)
        fhats = msvq.indices_to_fhat(q["indices"], codebook, phis, cfg)
        tf = msvq.teacher_forcing_input(q["indices"], codebook, phis, cfg)
        return q, grads, fhats, tf

    q, (gf, gcb, gphi), fhats, tf = run(f, codebook, phis)
    idx = np.concatenate([np.asarray(i) for i in q["indices"]], axis=1)
    np.testing.assert_array_equal(idx, g("idx_BL"))
    errs = {
        "vq_loss": abs(float(q["vq_loss"]) - float(g("vq_loss"))),
        "grad_f": np.abs(np.asarray(gf) - g("grad_f").transpose(0, 2, 3, 1)).max(),
        "grad_codebook": np.abs(np.asarray(gcb) - g("grad_codebook")).max(),
        "grad_phi_w": max(np.abs(np.asarray(w) - r.transpose(2, 3, 1, 0)).max()
                          for (w, _), r in zip(gphi, g("grad_phi_w"))),
        "grad_phi_b": max(np.abs(np.asarray(b) - r).max()
                          for (_, b), r in zip(gphi, g("grad_phi_b"))),
        "fhat": max(np.abs(np.asarray(x) - g("fhat")[:, s].transpose(0, 2, 3, 1)).max()
                    for s, x in enumerate(fhats)),
        "var_input": np.abs(np.asarray(tf) - g("var_input")).max(),
    }
    assert max(errs.values()) <= 1e-5, f"{name}: max abs errors {errs}"


def test_phi_selection_tables():
    # the released 256px tokenizer: 10 scales over 4 shared phis (ties resolved as numpy does)
    assert [msvq.phi_index(s, 10, 4) for s in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert [msvq.phi_index(s, 10, 0) for s in range(10)] == list(range(10))
    assert [msvq.phi_index(s, 10, 1) for s in range(10)] == [0] * 10
    assert [msvq.phi_index(s, 10, 3) for s in range(10)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [msvq.phi_index(s, 4, 4) for s in range(4)] == [0, 1, 2, 3]
    assert msvq.phi_index(0, 1, 4) == 0  # a single scale: no division by K-1 = 0
    with pytest.raises(ValueError, match="si=5"):
        msvq.phi_index(5, 5, 4)


def test_residuals_sum_to_fhat():
    cfg = make_cfg(share=2, patch_nums=(1, 2, 4, 6))
    codebook, phis = random_quantizer(cfg, 0)

    @jax.jit
    def run(f):
        idx_list, fhats = msvq.encode(f, codebook, phis, cfg)
        parts = [msvq.embed_scale(si, codebook[i], phis, cfg) for si, i in enumerate(idx_list)]
        return idx_list, fhats, parts

    idx_list, fhats, parts = run(normal(1, (3, 6, 6, 8)))
    np.testing.assert_allclose(np.asarray(fhats), np.cumsum(np.asarray(parts), axis=0),
                               atol=1e-5)
    chex.assert_shape(idx_list, [(3, p * p) for p in cfg.patch_nums])
    assert all(i.dtype == jnp.int32 for i in idx_list)


def test_quantization_reduces_the_residual():
    cfg = make_cfg(share=4)
    codebook, phis = random_quantizer(cfg, 2)
    # a latent built from codes is approximated better and better, scale by scale
    idx_in = [jnp.asarray(np.random.default_rng(s).integers(0, 32, (2, p * p)), jnp.int32)
              for s, p in enumerate(cfg.patch_nums)]

    @jax.jit
    def run(idx_in):
        f = msvq.indices_to_fhat(idx_in, codebook, phis, cfg)[-1]
        return f, msvq.encode(f, codebook, phis, cfg)[1]

    f, fhats = run(idx_in)
    errs = [float(jnp.mean(jnp.square(f - fh))) for fh in fhats]
    assert errs[-1] < errs[0], errs


def test_straight_through_gradient_is_identity():
    cfg = make_cfg()
    codebook, phis = random_quantizer(cfg, 4)
    f, cot = normal(5, (2, 8, 8, 8)), normal(6, (2, 8, 8, 8))

    @jax.jit
    def run(f):
        st = lambda f: jnp.sum(msvq.quantize_train(f, codebook, phis, cfg)["f_hat"] * cot)
        no_grad = lambda cb: jnp.sum(msvq.encode(f, cb, phis, cfg)[1][-1])
        q = msvq.quantize_train(f, codebook, phis, cfg)
        return jax.grad(st)(f), jax.grad(no_grad)(codebook), q["f_hat"], msvq.encode(
            f, codebook, phis, cfg)[1][-1]

    grad_st, grad_encode, f_hat_st, f_hat = run(f)
    chex.assert_trees_all_close(grad_st, cot, atol=0, rtol=0)
    assert float(jnp.abs(grad_encode).max()) == 0.0  # encode is gradient-free
    # the forward value is the quantized f_hat, not f
    chex.assert_trees_all_close(f_hat_st, f_hat, atol=1e-5)


def test_usage_and_histograms():
    cfg = make_cfg()
    codebook, phis = random_quantizer(cfg, 9)
    q = jitted(msvq.quantize_train, cfg)(normal(10, (4, 8, 8, 8)), codebook, phis)
    hist = np.asarray(q["hist_per_scale"])
    chex.assert_shape(q["hist_per_scale"], (cfg.num_scales, 32))
    assert hist.sum(1).tolist() == [4 * p * p for p in cfg.patch_nums]
    for si, idx in enumerate(q["indices"]):
        np.testing.assert_array_equal(hist[si], np.bincount(np.asarray(idx).ravel(), minlength=32))
    np.testing.assert_allclose(q["usage_per_scale"], (hist > 0).mean(1))
    assert q["vq_loss"].shape == () and np.isfinite(float(q["vq_loss"]))


def test_next_scale_input_replays_teacher_forcing():
    cfg = make_cfg(share=0)
    codebook, phis = random_quantizer(cfg, 11)

    @jax.jit
    def run(f):
        idx_list, fhats = msvq.encode(f, codebook, phis, cfg)
        f_hat, nexts = jnp.zeros_like(f), []
        for si, idx in enumerate(idx_list):
            f_hat, nxt = msvq.next_scale_input(si, f_hat, codebook[idx], phis, cfg)
            nexts.append(nxt)
        tf = msvq.teacher_forcing_input(idx_list, codebook, phis, cfg)
        tf_short = msvq.teacher_forcing_input(idx_list[:-1], codebook, phis, cfg)
        return fhats[-1], f_hat, nexts, tf, tf_short

    f_hat_enc, f_hat, nexts, tf, tf_short = run(normal(12, (2, 8, 8, 8)))
    chex.assert_trees_all_close(jnp.concatenate(nexts[:-1], 1), tf, atol=1e-6)
    chex.assert_trees_all_close(f_hat, f_hat_enc, atol=1e-6)
    chex.assert_shape(nexts[-1], (2, 64, 8))
    chex.assert_trees_all_close(tf_short, tf)  # only the first K-1 maps are needed
    chex.assert_shape(tf, (2, cfg.seq_len - 1, 8))


def test_single_scale_config():
    cfg = make_cfg(share=4, patch_nums=(8,))
    codebook, phis = random_quantizer(cfg, 13)
    idx_list, _ = jitted(msvq.encode, cfg)(normal(14, (2, 8, 8, 8)), codebook, phis)
    chex.assert_shape(idx_list, [(2, 64)])
    chex.assert_shape(msvq.teacher_forcing_input(idx_list, codebook, phis, cfg), (2, 0, 8))


def test_errors_name_the_problem():
    cfg = make_cfg()
    codebook, phis = random_quantizer(cfg, 17)
    f = jnp.zeros((2, 8, 8, 8))
    idx_list = [jnp.zeros((2, p * p), jnp.int32) for p in cfg.patch_nums]
    codes = [jnp.zeros((2, p * p, 8)) for p in cfg.patch_nums]
    with pytest.raises(ValueError, match="phi convs"):
        msvq.encode(f, codebook, phis[:2], cfg)
    with pytest.raises(ValueError, match=r"latent f must be \(B, 8, 8, 8\)"):
        msvq.encode(jnp.zeros((2, 4, 4, 8)), codebook, phis, cfg)
    with pytest.raises(ValueError, match="expected 5 index maps"):
        msvq.indices_to_fhat(idx_list[:3], codebook, phis, cfg)
    with pytest.raises(ValueError, match=r"scale 1 must have shape \(B, 4\)"):
        msvq.indices_to_fhat([idx_list[0], idx_list[2]] + idx_list[2:], codebook, phis, cfg)
    with pytest.raises(ValueError, match="must be integer"):
        msvq.indices_to_fhat([i.astype(jnp.float32) for i in idx_list], codebook, phis, cfg)
    with pytest.raises(ValueError, match="all 5 scales"):
        msvq.teacher_forcing_input(idx_list[:2], codebook, phis, cfg)
    with pytest.raises(ValueError, match="si=5"):
        msvq.next_scale_input(5, f, codes[-1], phis, cfg)
    with pytest.raises(ValueError, match=r"\(B, 9, C\)"):
        msvq.next_scale_input(2, f, codes[1], phis, cfg)
