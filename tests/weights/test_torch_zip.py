"""The .pth reader: golden files load; malicious, truncated and tampered files are refused."""
import os
import pickle
import zipfile

import numpy as np
import pytest

from var_jax.weights.torch_zip import (CorruptCheckpointError, UnsafeCheckpointError,
                                       load_torch_state_dict)

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "fixtures", "golden")


def _write_torch_zip(path, pkl_bytes, extra=None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl_bytes)
        z.writestr("archive/byteorder", "little")
        for name, data in (extra or {}).items():
            z.writestr(f"archive/{name}", data)


class _WritesFile:
    """Unpickling this would call os.system / open: the reader must never get that far."""

    def __init__(self, target, how):
        self.target, self.how = target, how

    def __reduce__(self):
        if self.how == "system":
            return (os.system, (f"touch {self.target}",))
        return (open, (self.target, "w"))


@pytest.mark.parametrize("how, global_name", [("system", "posix.system"), ("open", "io.open")])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, how, global_name):
    target = tmp_path / "pwned"
    state = {"weight": _WritesFile(str(target), how)}
    path = tmp_path / "evil.pth"
    _write_torch_zip(path, pickle.dumps(state, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=global_name.split(".")[1]) as info:
        load_torch_state_dict(path)
    assert "not a tensor-rebuild or container global" in str(info.value)
    assert not target.exists(), "the malicious global ran"


def test_every_golden_file_loads_as_numpy():
    sd = load_torch_state_dict(os.path.join(GOLDEN, "vae.pth"))
    assert len(sd) == 324 and all(isinstance(v, np.ndarray) for v in sd.values())
    assert sd["quantize.embedding.weight"].shape == (64, 8)
    assert sd["encoder.conv_in.weight"].dtype == np.float32
    sd = load_torch_state_dict(os.path.join(GOLDEN, "var_tiny_saln.pth"))
    assert sd["blocks.0.ada_gss"].shape == (1, 1, 6, 128)
    assert np.isfinite(sd["head.weight"]).all() and np.abs(sd["head.weight"]).max() > 0


def test_truncated_file_gives_clear_error(tmp_path):
    data = open(os.path.join(GOLDEN, "var_tiny_l2norm.pth"), "rb").read()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="truncated|not a PyTorch zip"):
        load_torch_state_dict(path)


def test_non_zip_files_give_clear_error(tmp_path):
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CorruptCheckpointError, match="not a PyTorch zip checkpoint"):
        load_torch_state_dict(path)
    with pytest.raises(FileNotFoundError):
        load_torch_state_dict(tmp_path / "missing.pth")


def test_storage_shorter_than_declared_is_refused(tmp_path):
    src = zipfile.ZipFile(os.path.join(GOLDEN, "var_tiny_l2norm.pth"))
    path = tmp_path / "tampered.pth"
    with zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data/0"):
                data = data[:-8]
            out.writestr(info.filename, data)
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        load_torch_state_dict(path)


def test_non_tensor_entries_are_refused(tmp_path):
    path = tmp_path / "dict_of_ints.pth"
    _write_torch_zip(path, pickle.dumps({"epoch": 3}, protocol=2))
    with pytest.raises(CorruptCheckpointError, match="'epoch' is a int, not a tensor"):
        load_torch_state_dict(path)
