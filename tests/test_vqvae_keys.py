"""The tokenizer key map: golden and released key sets convert strictly; bad keys are named."""
import json
import os
import time

import jax
import numpy as np
import pytest

from var_jax.configs import VQVAEConfig
from var_jax.convert import infer_config, load_torch_state_dict
from var_jax.weights.strict import CONV, IDENTITY
from var_jax.weights.vqvae_keys import (expected_vqvae_params, vqvae_key_map,
                                        vqvae_params_from_torch)

GOLDEN = os.path.join(os.path.dirname(__file__), "fixtures", "golden")
GOLDEN_CFG = VQVAEConfig(vocab_size=64, z_channels=8, ch=32, patch_nums=(1, 2, 3, 4),
                         image_size=64)


@pytest.fixture(scope="module")
def golden_sd():
    return load_torch_state_dict(os.path.join(GOLDEN, "vae.pth"))


def test_key_map_mirrors_torch_names():
    km = vqvae_key_map(VQVAEConfig.res256())
    assert km("encoder.down.0.block.1.conv1.weight") == (
        ("encoder", "down_0", "block_1", "conv1", "kernel"), CONV)
    assert km("decoder.up.4.attn.2.qkv.bias") == (
        ("decoder", "up_4", "attn_2", "qkv", "bias"), IDENTITY)
    assert km("decoder.mid.attn_1.norm.weight") == (
        ("decoder", "mid", "attn_1", "norm", "scale"), IDENTITY)
    assert km("encoder.down.3.downsample.conv.weight")[0] == (
        "encoder", "down_3", "downsample", "conv", "kernel")
    assert km("quantize.embedding.weight") == (("quantize", "embedding"), IDENTITY)
    assert km("quantize.quant_resi.qresi_ls.3.weight") == (("quantize", "phi_3", "kernel"), CONV)
    assert km("quant_conv.bias") == (("quant_conv", "bias"), IDENTITY)


def test_phi_layout_follows_share_quant_resi():
    one = vqvae_key_map(VQVAEConfig.res256(share_quant_resi=1))
    own = vqvae_key_map(VQVAEConfig.res256(share_quant_resi=0))
    assert one("quantize.quant_resi.qresi.weight")[0] == ("quantize", "phi_0", "kernel")
    assert own("quantize.quant_resi.7.bias")[0] == ("quantize", "phi_7", "bias")
    # a layout of another sharing mode is not silently accepted
    assert one("quantize.quant_resi.qresi_ls.0.weight") is None
    assert own("quantize.quant_resi.qresi.weight") is None


def test_golden_checkpoint_converts_with_layouts(golden_sd):
    params = vqvae_params_from_torch(golden_sd, GOLDEN_CFG)
    want = expected_vqvae_params(GOLDEN_CFG)
    assert jax.tree.structure(params) == jax.tree.structure(want)
    w = golden_sd["encoder.conv_in.weight"]
    np.testing.assert_array_equal(params["encoder"]["conv_in"]["kernel"], w.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["quantize"]["embedding"],
                                  golden_sd["quantize.embedding.weight"])
    # C-contiguous: a transposed view would be re-laid-out on every host-to-device transfer
    assert all(a.flags.c_contiguous for a in jax.tree.leaves(params))


def test_released_checkpoint_keys_convert():
    with open(os.path.join(GOLDEN, "released_checkpoint_keys.json")) as f:
        shapes = json.load(f)["vae_ch160v4096z32"]
    sizes = [int(np.prod(s)) for s in shapes.values()]
    flat = np.random.default_rng(0).standard_normal(sum(sizes), dtype=np.float32)
    offsets = np.cumsum([0] + sizes)
    sd = {k: flat[a:a + n].reshape(s) for (k, s), a, n in zip(shapes.items(), offsets, sizes)}
    cfg = infer_config(sd, image_size=256)
    assert cfg == VQVAEConfig.res256()
    start = time.perf_counter()
    params = vqvae_params_from_torch(sd, cfg)
    seconds = time.perf_counter() - start
    assert jax.tree.structure(params) == jax.tree.structure(expected_vqvae_params(cfg))
    n = sum(p.size for p in jax.tree.leaves(params))
    assert n == sum(sizes) - 10 * 4096  # everything but the ema_vocab_hit_SV buffer
    assert seconds < 20, f"converting {n / 1e6:.0f}M values took {seconds:.1f} s"
    w = sd["decoder.up.1.block.0.nin_shortcut.weight"]
    np.testing.assert_array_equal(
        params["decoder"]["up_1"]["block_0"]["nin_shortcut"]["kernel"], w.transpose(2, 3, 1, 0))
    # the 512px scales use the same weights
    assert jax.tree.map(np.shape, vqvae_params_from_torch(sd, VQVAEConfig.res512())) == \
        jax.tree.map(np.shape, params)


def test_missing_key_is_named(golden_sd):
    sd = dict(golden_sd)
    del sd["decoder.up.1.block.0.nin_shortcut.weight"]
    with pytest.raises(ValueError, match="decoder/up_1/block_0/nin_shortcut/kernel"):
        vqvae_params_from_torch(sd, GOLDEN_CFG)


def test_unexpected_key_is_named(golden_sd):
    sd = dict(golden_sd, **{"encoder.down.0.attn.0.qkv.weight": np.zeros((96, 32, 1, 1))})
    with pytest.raises(ValueError, match=r"encoder\.down\.0\.attn\.0\.qkv\.weight"):
        vqvae_params_from_torch(sd, GOLDEN_CFG)


def test_misshaped_key_is_named(golden_sd):
    sd = dict(golden_sd, **{"quantize.embedding.weight": np.zeros((65, 8), np.float32)})
    with pytest.raises(ValueError, match=r"quantize\.embedding\.weight: checkpoint \(65, 8\)"):
        vqvae_params_from_torch(sd, GOLDEN_CFG)


def test_wrong_config_is_refused(golden_sd):
    with pytest.raises(ValueError, match="does not fit the config"):
        vqvae_params_from_torch(golden_sd, VQVAEConfig(
            vocab_size=64, z_channels=8, ch=32, patch_nums=(1, 2, 3, 4), image_size=64,
            share_quant_resi=1))
