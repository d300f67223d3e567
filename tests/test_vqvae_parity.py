"""Golden parity of the tokenizer with the PyTorch reference (tests/fixtures/golden/vae*)."""
import json
import os

import jax
import numpy as np
import pytest

from var_jax.configs import VQVAEConfig
from var_jax.convert import load_torch_state_dict, vqvae_params_from_torch
from var_jax.vqvae import VQVAE

GOLDEN = os.path.join(os.path.dirname(__file__), "fixtures", "golden")
TOL = 1e-4


def golden_config() -> VQVAEConfig:
    with open(os.path.join(GOLDEN, "fixtures.json")) as f:
        fixtures = json.load(f)
    vae = fixtures["vae"]
    return VQVAEConfig(vocab_size=vae["vocab_size"], z_channels=vae["z_channels"], ch=vae["ch"],
                       patch_nums=tuple(vae["v_patch_nums"]),
                       share_quant_resi=vae["share_quant_resi"],
                       image_size=fixtures["image_size"])


def nhwc(a):
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a.transpose(0, 1, 3, 4, 2)


@pytest.fixture(scope="module")
def outputs():
    cfg = golden_config()
    params = vqvae_params_from_torch(load_torch_state_dict(os.path.join(GOLDEN, "vae.pth")), cfg)
    io = dict(np.load(os.path.join(GOLDEN, "vae_io.npz")))
    bounds = np.cumsum([0] + [p * p for p in cfg.patch_nums])
    gt_idx = [io["idx_BL"][:, a:b].astype(np.int32) for a, b in zip(bounds[:-1], bounds[1:])]

    @jax.jit
    def run(params, img, gt_idx, gt_fhat_last):
        model, v = VQVAE(cfg), {"params": params}
        idx = model.apply(v, img, method="encode_indices")
        fhats = model.apply(v, idx, method="indices_to_fhat")
        return {
            "f": model.apply(v, img, method="encode_f"),
            "idx": idx,
            "fhat": fhats,
            "recon": model.apply(v, fhats[-1], method="decode_fhat"),
            "decoded": model.apply(v, gt_fhat_last, method="decode_fhat"),
            "var_input": model.apply(v, gt_idx, method="teacher_forcing_input"),
            "train": model.apply(v, img, train=False),
        }

    out = run(params, nhwc(io["img"]), gt_idx, nhwc(io["fhat_per_scale"][:, -1]))
    return jax.tree.map(np.asarray, out), io


def max_err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def test_latent_f(outputs):
    out, io = outputs
    err = max_err(out["f"], nhwc(io["f"]))
    assert err <= TOL, f"f max abs err {err:.3g}"


def test_every_scale_index_is_equal(outputs):
    out, io = outputs
    idx = np.concatenate(out["idx"], axis=1)
    mismatches = int((idx != io["idx_BL"]).sum())
    assert mismatches == 0, f"{mismatches} of {idx.size} indices differ from the reference"
    assert all(i.dtype == np.int32 for i in out["idx"])


def test_running_fhat_per_scale(outputs):
    out, io = outputs
    ref = nhwc(io["fhat_per_scale"])
    errs = [max_err(out["fhat"][s], ref[:, s]) for s in range(ref.shape[1])]
    assert max(errs) <= TOL, f"f_hat max abs err per scale {errs}"


def test_recon_and_decoded(outputs):
    out, io = outputs
    errs = {"recon": max_err(out["recon"], nhwc(io["recon"])),
            "decoded": max_err(out["decoded"], nhwc(io["decoded"])),
            "train_forward_eval_recon": max_err(out["train"]["recon"], nhwc(io["recon"]))}
    assert max(errs.values()) <= TOL, f"max abs errs {errs}"


def test_teacher_forcing_input(outputs):
    out, io = outputs
    assert out["var_input"].shape == io["var_input"].shape
    err = max_err(out["var_input"], io["var_input"])
    assert err <= TOL, f"var_input max abs err {err:.3g}"
