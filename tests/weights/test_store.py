"""Converted-weights directories round-trip; configs are read off released checkpoints."""
import json
import os

import numpy as np
import pytest

from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.convert import infer_config
from var_jax.weights.store import is_converted_dir, load_converted, save_converted

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "fixtures", "golden")


def test_save_and_load_round_trip(tmp_path):
    cfg = VARConfig(depth=2, embed_dim=128, num_heads=2, num_classes=10, patch_nums=(1, 2))
    params = {"blocks_0": {"kernel": np.arange(12, dtype=np.float32).reshape(3, 4)},
              "head": {"bias": np.ones(5, np.float32)}}
    out = save_converted(tmp_path / "w", cfg, params)
    assert is_converted_dir(out)
    cfg2, params2 = load_converted(out)
    assert cfg2 == cfg
    np.testing.assert_array_equal(params2["blocks_0"]["kernel"], params["blocks_0"]["kernel"])
    with pytest.raises(FileExistsError):
        save_converted(tmp_path / "w", cfg, params)
    with pytest.raises(FileNotFoundError, match="not a converted-weights directory"):
        load_converted(tmp_path)


def _released(name):
    keys = json.load(open(os.path.join(GOLDEN, "released_checkpoint_keys.json")))[name]
    return {k: np.broadcast_to(np.float32(0), shape) for k, shape in keys.items()}


@pytest.mark.parametrize("name, expected", [
    ("var_d16", VARConfig.d16(drop_path_rate=0.0)),
    ("var_d30", VARConfig.d30(drop_path_rate=0.0)),
    ("var_d36", VARConfig.d36(drop_path_rate=0.0)),
])
def test_infer_config_of_released_checkpoints(name, expected):
    assert infer_config(_released(name)) == expected


def test_infer_config_tokenizer_scales_are_asked_for_and_unknown_dict():
    tokenizer = _released("vae_ch160v4096z32")
    assert infer_config(tokenizer, image_size=256) == VQVAEConfig.res256()
    assert infer_config(tokenizer, image_size=512) == VQVAEConfig.res512()
    with pytest.raises(ValueError, match="give --patch-nums"):
        infer_config(tokenizer)
    with pytest.raises(ValueError, match="unrecognised state dict"):
        infer_config({"foo": np.zeros(2)})
