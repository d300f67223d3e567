"""`var-jax reconstruct` end to end on the golden tiny tokenizer."""
import os

import argparse

import numpy as np
import pytest
from PIL import Image

from var_jax.commands import reconstruct
from var_jax.commands.reconstruct import list_images
from var_jax.image_io import load_image

GOLDEN_VAE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "golden", "vae.pth")
GOLDEN_IO = os.path.join(os.path.dirname(__file__), "..", "fixtures", "golden", "vae_io.npz")


def run_command(argv):
    parser = argparse.ArgumentParser()
    reconstruct.add_arguments(parser)
    return reconstruct.run(parser.parse_args(argv))


def save_png(path, arr_HW3):
    Image.fromarray(arr_HW3).save(path)
    return str(path)


def test_reconstructs_files_and_folders(tmp_path, capsys):
    # the golden input image (8-bit) plus a non-square one
    img = np.load(GOLDEN_IO)["img"][0].transpose(1, 2, 0)
    pixels = np.clip(np.round((img + 1) * 127.5), 0, 255).astype(np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    save_png(folder / "golden.png", pixels)
    wide = save_png(tmp_path / "wide.png",
                    np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    out = tmp_path / "out"
    rc = run_command([str(folder), wide, "--weights", GOLDEN_VAE, "--patch-nums", "1,2,3,4",
                      "--out-dir", str(out), "--batch-size", "3"])
    assert rc == 0
    for stem in ("golden", "wide"):
        recon = np.asarray(Image.open(out / f"{stem}_recon.png"))
        pyramid = np.asarray(Image.open(out / f"{stem}_pyramid.png"))
        assert recon.shape == (64, 64, 3) and recon.dtype == np.uint8
        assert pyramid.shape == (64, 5 * 66 - 2, 3)  # input + one decode per scale, 2 px gaps
        np.testing.assert_array_equal(pyramid[:, -64:], recon)  # last scale = reconstruction
    np.testing.assert_array_equal(np.asarray(Image.open(out / "golden_pyramid.png"))[:, :64],
                                  pixels)
    printed = capsys.readouterr().out
    assert "golden.png: PSNR" in printed and "wide_pyramid.png" in printed


def test_corrupt_image_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_image(str(bad), 64)
    good = save_png(tmp_path / "good.png", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="broken.png"):
        run_command([good, str(bad), "--weights", GOLDEN_VAE, "--patch-nums", "1,2,3,4",
                     "--out-dir", str(tmp_path / "out")])


def test_input_listing_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here.png"):
        list_images([str(tmp_path / "nothing_here.png")])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no images"):
        list_images([str(tmp_path)])


def test_transformer_weights_are_refused(tmp_path):
    var_pth = os.path.join(os.path.dirname(GOLDEN_VAE), "var_tiny_l2norm.pth")
    img = save_png(tmp_path / "a.png", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="not a VQ-VAE tokenizer"):
        run_command([img, "--weights", var_pth, "--patch-nums", "1,2,3,4"])


def test_converted_directory_loads_like_the_pth(tmp_path, capsys):
    from var_jax.convert import load_weights, save_converted

    cfg, params = load_weights(GOLDEN_VAE, "vae", (1, 2, 3, 4))
    converted = save_converted(tmp_path / "vae_conv", cfg, params)
    img = save_png(tmp_path / "a.png", np.zeros((64, 64, 3), np.uint8))
    assert run_command([img, "--vae", converted, "--out", str(tmp_path / "o1")]) == 0
    assert run_command([img, "--vae", GOLDEN_VAE, "--patch-nums", "1,2,3,4",
                        "--out", str(tmp_path / "o2")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o1" / "a_pyramid.png")),
                                  np.asarray(Image.open(tmp_path / "o2" / "a_pyramid.png")))
    assert "[1/1] " in capsys.readouterr().out
    with pytest.raises(ValueError, match="drop --image-size"):
        run_command([img, "--vae", converted, "--image-size", "256"])
