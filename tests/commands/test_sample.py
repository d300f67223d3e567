"""`var-jax sample` end to end on the golden tiny weights."""
import dataclasses
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

import var_jax.sampling
from var_jax import sample
from var_jax.cli import main
from var_jax.convert import load_weights

GOLDEN = pathlib.Path(__file__).parent.parent / "fixtures" / "golden"
WEIGHTS = ["--var", str(GOLDEN / "var_tiny_l2norm.pth"), "--vae", str(GOLDEN / "vae.pth"),
           "--patch-nums", "1,2,3,4", "--top-k", "8", "--compile-cache", ""]


def test_sample_writes_a_grid_whose_images_depend_only_on_seed_and_index(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", "--classes", "1,4", "--per-class", "2", "--batch-size", "3",
                 "--nrow", "2", "--seed", "5", "--out", str(out)] + WEIGHTS) == 0
    assert "wrote 4 images" in capsys.readouterr().out
    grid = np.asarray(Image.open(out)).astype(int)
    assert grid.shape == (2 * 64 + 2, 2 * 64 + 2, 3)
    # Image i uses key i of split(key(seed), 4), whichever chunk (batch 3 + padded 1) it was in.
    var_cfg, var_params = load_weights(GOLDEN / "var_tiny_l2norm.pth", "var", (1, 2, 3, 4))
    vae_cfg, vae_params = load_weights(GOLDEN / "vae.pth", "vae", (1, 2, 3, 4))
    labels, keys = np.array([1, 1, 4, 4]), jax.random.split(jax.random.key(5), 4)
    last = np.array([3, 3, 3])
    imgs = np.concatenate([
        sample(var_params, vae_params, var_cfg, vae_cfg, labels[:3], keys[:3], top_k=8),
        sample(var_params, vae_params, var_cfg, vae_cfg, labels[last], keys[last], top_k=8)[:1]])
    for i, img in enumerate(np.round(imgs * 255)):
        r, c = divmod(i, 2)
        tile = grid[r * 66:r * 66 + 64, c * 66:c * 66 + 64]
        assert np.abs(tile - img).max() <= 1, f"image {i} differs"


def test_sample_refiner_and_pruning_flags(tmp_path, capsys):
    """--refiner/--draft-scales and --prune-ratio reach the sampler; the CLI grid is its images."""
    out = tmp_path / "grid.png"
    fast = ["--refiner", str(GOLDEN / "var_tiny_saln.pth"), "--draft-scales", "2",
            "--prune-ratio", "0.5", "--prune-scales", "1"]
    assert main(["sample", "--classes", "2", "--seed", "1", "--out", str(out)] + WEIGHTS
                + fast) == 0
    var_cfg, var_params = load_weights(GOLDEN / "var_tiny_l2norm.pth", "var", (1, 2, 3, 4))
    ref_cfg, ref_params = load_weights(GOLDEN / "var_tiny_saln.pth", "var", (1, 2, 3, 4))
    vae_cfg, vae_params = load_weights(GOLDEN / "vae.pth", "vae", (1, 2, 3, 4))
    img = sample(var_params, vae_params, var_cfg, vae_cfg, [2], jax.random.split(
        jax.random.key(1), 1), top_k=8, refiner=(ref_params, ref_cfg), draft_scales=2,
        prune_ratio=0.5, prune_scales=1)[0]
    assert np.abs(np.asarray(Image.open(out)).astype(int) - np.round(img * 255)).max() <= 1
    capsys.readouterr()
    assert main(["sample", "--classes", "2", "--out", str(out), "--draft-scales", "2"]
                + WEIGHTS) != 0
    assert "--draft-scales needs --refiner" in capsys.readouterr().err



def test_sample_dtype_flag_reaches_the_transformer(tmp_path, capsys, monkeypatch):
    """--dtype bfloat16: the sampler gets a bf16 transformer config and the grid is its images;
    a dtype the model has no compute path for is refused by the flag parser."""
    seen = []

    def spy(var_params, vae_params, var_cfg, *args, **kwargs):
        seen.append(var_cfg.dtype)
        return sample(var_params, vae_params, var_cfg, *args, **kwargs)
    monkeypatch.setattr(var_jax.sampling, "sample", spy)
    out = tmp_path / "grid.png"
    assert main(["sample", "--classes", "3", "--seed", "2", "--dtype", "bfloat16",
                 "--out", str(out)] + WEIGHTS) == 0
    assert seen == ["bfloat16"]
    var_cfg, var_params = load_weights(GOLDEN / "var_tiny_l2norm.pth", "var", (1, 2, 3, 4))
    vae_cfg, vae_params = load_weights(GOLDEN / "vae.pth", "vae", (1, 2, 3, 4))
    img = sample(var_params, vae_params, dataclasses.replace(var_cfg, dtype="bfloat16"), vae_cfg,
                 [3], jax.random.split(jax.random.key(2), 1), top_k=8)[0]
    assert np.abs(np.asarray(Image.open(out)).astype(int) - np.round(img * 255)).max() <= 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--classes", "3", "--dtype", "int8", "--out", str(out)] + WEIGHTS)
    assert exit_info.value.code == 2
    assert "--dtype: invalid choice: 'int8'" in capsys.readouterr().err
