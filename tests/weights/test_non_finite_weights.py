"""NaN/Inf weights are refused when converting a .pth and when loading a converted dir."""
import os
import zipfile

import numpy as np
import pytest

from var_jax.cli import main
from var_jax.configs import VARConfig
from var_jax.weights.store import load_converted, save_converted
from var_jax.weights.strict import IDENTITY, params_from_state_dict

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "fixtures", "golden")


def _golden_with(path, storage_key, index, value):
    """var_tiny_l2norm.pth with element `index` of storage `storage_key` set to `value`."""
    with zipfile.ZipFile(os.path.join(GOLDEN, "var_tiny_l2norm.pth")) as src, \
            zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith(f"/data/{storage_key}"):
                arr = np.frombuffer(data, np.float32).copy()
                arr[index] = value
                data = arr.tobytes()
            out.writestr(info.filename, data)
    return path


@pytest.mark.parametrize("value, word", [(np.nan, "1 NaN, 0 Inf"), (np.inf, "0 NaN, 1 Inf")])
def test_convert_refuses_non_finite_weights_naming_the_tensor(tmp_path, capsys, value, word):
    bad = _golden_with(tmp_path / "bad.pth", "0", 5, value)  # storage 0 is 'pos_start'
    out = tmp_path / "out"
    assert main(["convert", str(bad), str(out), "--patch-nums", "1,2,3,4"]) == 2
    err = capsys.readouterr().err
    assert "pos_start" in err and f"{word} of 128 values" in err
    assert "damaged" in err and "diverged" in err and "Traceback" not in err
    assert not out.exists()


def test_loading_a_converted_dir_refuses_non_finite_weights(tmp_path):
    cfg = VARConfig(depth=2, embed_dim=128, num_heads=2, num_classes=10, patch_nums=(1, 2))
    params = {"blocks_0": {"kernel": np.ones((3, 4), np.float32)},
              "head": {"bias": np.array([0.0, np.inf, np.nan], np.float32)}}
    out = save_converted(tmp_path / "w", cfg, params)
    with pytest.raises(ValueError, match=r"head/bias holds NaN/Inf \(1 NaN, 1 Inf of 3 "
                                         r"values\): the files are damaged"):
        load_converted(out)


def test_strict_conversion_names_every_non_finite_key():
    expected = {"a": {"w": np.zeros(2, np.float32)}, "b": {"w": np.zeros(2, np.float32)}}
    table = {"a.weight": (("a", "w"), IDENTITY), "b.weight": (("b", "w"), IDENTITY)}
    sd = {"a.weight": np.array([np.nan, np.nan]), "b.weight": np.array([1.0, -np.inf])}
    with pytest.raises(ValueError, match=r"(?s)a\.weight \(2 NaN, 0 Inf of 2 values\).*"
                                         r"b\.weight \(0 NaN, 1 Inf of 2 values\)"):
        params_from_state_dict(sd, expected, table.get)
