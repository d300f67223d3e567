"""The reference's golden tiny models (tests/fixtures/golden): paths, names and loaders.

Tests take the models through the `golden_var` / `golden_vae` fixtures of tests/conftest.py;
the names below are for parametrisation and file paths.
"""
import functools
import json
import pathlib

import numpy as np

from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.convert import load_torch_state_dict, var_params_from_torch, vqvae_params_from_torch

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "golden"
FIXTURES = json.loads((GOLDEN / "fixtures.json").read_text())
VAR_NAMES = [v["name"] for v in FIXTURES["vars"]]
TOL = 1e-4


def golden_vae_config() -> VQVAEConfig:
    vae = FIXTURES["vae"]
    return VQVAEConfig(vocab_size=vae["vocab_size"], z_channels=vae["z_channels"], ch=vae["ch"],
                       patch_nums=tuple(vae["v_patch_nums"]),
                       share_quant_resi=vae["share_quant_resi"],
                       image_size=FIXTURES["image_size"])


@functools.lru_cache(maxsize=None)
def load_var(name: str):
    """(VARConfig, params, io npz dict, cfgs tuple) of a golden tiny VAR."""
    spec = next(v for v in FIXTURES["vars"] if v["name"] == name)
    vae = FIXTURES["vae"]
    cfg = VARConfig(depth=spec["depth"], embed_dim=spec["embed_dim"], num_heads=spec["num_heads"],
                    num_classes=spec["num_classes"], patch_nums=tuple(spec["patch_nums"]),
                    vocab_size=vae["vocab_size"], vae_channels=vae["z_channels"],
                    shared_aln=spec["shared_aln"], attn_l2_norm=spec["attn_l2_norm"],
                    norm_eps=spec["norm_eps"], mlp_ratio=spec["mlp_ratio"])
    params = var_params_from_torch(load_torch_state_dict(GOLDEN / f"{name}.pth"), cfg)
    io = dict(np.load(GOLDEN / f"{name}_io.npz"))
    return cfg, params, io, tuple(spec["cfgs"])


@functools.lru_cache(maxsize=None)
def load_vae():
    """(VQVAEConfig, params) of the golden tokenizer."""
    cfg = golden_vae_config()
    return cfg, vqvae_params_from_torch(load_torch_state_dict(GOLDEN / "vae.pth"), cfg)
