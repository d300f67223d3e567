"""`var-jax convert`: .pth -> Orbax directory that loads back to the same params."""
import os

import jax
import numpy as np
import pytest

from var_jax.cli import main
from var_jax.convert import load_torch_state_dict, load_weights, vqvae_params_from_torch
from var_jax.configs import VQVAEConfig

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "fixtures", "golden")


def test_convert_then_load_gives_the_direct_conversion(tmp_path, capsys):
    out = tmp_path / "vae"
    assert main(["convert", os.path.join(GOLDEN, "vae.pth"), str(out),
                 "--patch-nums", "1,2,3,4"]) == 0
    assert "324 tensors" in capsys.readouterr().out
    cfg, params = load_weights(out, "vae")
    assert cfg == VQVAEConfig(vocab_size=64, z_channels=8, ch=32, patch_nums=(1, 2, 3, 4),
                              image_size=64)
    direct = vqvae_params_from_torch(load_torch_state_dict(os.path.join(GOLDEN, "vae.pth")), cfg)
    jax.tree.map(np.testing.assert_array_equal, params, direct)


def test_convert_reports_bad_input_without_writing(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["convert", str(bad), str(tmp_path / "out")]) == 2
    assert "not a PyTorch zip checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        main(["convert", str(bad), str(tmp_path / "out"), "--image-size", "300"])


def test_a_tokenizer_pth_needs_its_scales(tmp_path, capsys):
    assert main(["convert", os.path.join(GOLDEN, "vae.pth"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        "var-jax convert: error: cannot tell the scales: the tokenizer's weights do not store its "
        "scales; give --patch-nums (e.g. 1,2,3,4) or --image-size 256 / 512 for the released "
        "scales.\n")
    assert not (tmp_path / "out").exists()
