"""The .pth reader: golden files load; malicious, truncated and tampered files are refused."""
import io
import os
import pickle
import time
import zipfile
import zlib

import numpy as np
import pytest

import pth_craft
from var_jax.weights.torch_zip import (CheckpointFormatError, CorruptCheckpointError,
                                       UnsafeCheckpointError, load_torch_state_dict)

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
    with pytest.raises(CorruptCheckpointError, match="'epoch' is an int, not a tensor"):
        load_torch_state_dict(path)


# --- the reader's guarantees, with files crafted by tests/weights/pth_craft.py

def _load_bytes(data):
    return load_torch_state_dict(io.BytesIO(data))


def test_errors_are_one_family_of_value_errors():
    assert issubclass(UnsafeCheckpointError, CheckpointFormatError)
    assert issubclass(CorruptCheckpointError, CheckpointFormatError)
    assert issubclass(CheckpointFormatError, ValueError)


def test_crafted_file_round_trips_dtypes_views_and_shared_storage():
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(3, 4)).astype(np.float32),
              "half": rng.normal(size=(5,)).astype(np.float16),
              "idx": np.arange(6, dtype=np.int64).reshape(2, 3),
              "mask": np.array([True, False, True]), "scalar": np.array(2.5)}
    sd = _load_bytes(pth_craft.pth_from_arrays(arrays))
    for k, a in arrays.items():
        assert sd[k].dtype == a.dtype and sd[k].shape == a.shape
        np.testing.assert_array_equal(sd[k], a)
        assert sd[k].flags.c_contiguous and sd[k].flags.writeable
    # A transposed view, a row slice and a small broadcast (stride 0) of one shared storage:
    data = np.arange(12, dtype=np.float32)
    s = pth_craft.storage("0", 12)
    pkl = pth_craft.state_dict({
        "full": pth_craft.rebuild(s, 0, (3, 4), (4, 1)),
        "t": pth_craft.rebuild(s, 0, (4, 3), (1, 4)),
        "row": pth_craft.rebuild(s, 4, (4,), (1,)),
        "bcast": pth_craft.rebuild(s, 11, (2, 3), (0, 0))})
    sd = _load_bytes(pth_craft.write_pth(pkl, {"0": data.tobytes()}))
    np.testing.assert_array_equal(sd["full"], data.reshape(3, 4))
    np.testing.assert_array_equal(sd["t"], data.reshape(3, 4).T)
    np.testing.assert_array_equal(sd["row"], data[4:8])
    np.testing.assert_array_equal(sd["bcast"], np.full((2, 3), 11.0))
    sd["full"][0, 0] = -1.0  # a shared storage is copied: writing one tensor leaves the others
    assert sd["t"][0, 0] == 0.0 and all(v.flags.c_contiguous for v in sd.values())


def test_odd_but_valid_geometry_loads():
    """Size-1 dimensions may carry any stride; an empty tensor any offset inside its storage."""
    data = np.arange(4, dtype=np.float32)
    s = pth_craft.storage("0", 4)
    pkl = pth_craft.state_dict({"odd": pth_craft.rebuild(s, 0, (1, 2, 2), (2**70, 1, 2)),
                                "empty": pth_craft.rebuild(s, 4, (0, 3), (2**40, 1))})
    sd = _load_bytes(pth_craft.write_pth(pkl, {"0": data.tobytes()}))
    np.testing.assert_array_equal(sd["odd"], data.reshape(1, 2, 2).transpose(0, 2, 1))
    assert sd["empty"].shape == (0, 3)


def test_heap_read_attack_is_refused():
    """The review's attack: a rebuilt tensor passed as the storage of a second, 2-D tensor."""
    first = pth_craft.rebuild(pth_craft.storage("0", 4), 0, (4,), (1,))
    second = pth_craft.rebuild(first, 0, (2, 4096), (4096, 1))
    data = pth_craft.write_pth(pth_craft.state_dict({"w": second}), {"0": bytes(16)})
    with pytest.raises(UnsafeCheckpointError, match="rebuilt earlier in the pickle"):
        _load_bytes(data)


def test_rows_are_bounded_in_elements_not_rows():
    """(2, 4) with stride (4, 1) needs 8 elements; a 5-element storage must be refused."""
    pkl = pth_craft.state_dict({"w": pth_craft.rebuild(pth_craft.storage("0", 5), 0, (2, 4),
                                                       (4, 1))})
    with pytest.raises(CorruptCheckpointError, match="reaches element 7 .* holds 5 elements"):
        _load_bytes(pth_craft.write_pth(pkl, {"0": bytes(20)}))


def test_stride_zero_terabytes_fail_fast_without_allocating():
    pkl = pth_craft.state_dict({"w": pth_craft.rebuild(pth_craft.storage("0", 1), 0,
                                                       (2**20, 2**20), (0, 0))})
    start = time.perf_counter()
    with pytest.raises(CorruptCheckpointError, match="far more than the file"):
        _load_bytes(pth_craft.write_pth(pkl, {"0": bytes(4)}))
    assert time.perf_counter() - start < 1.0


def test_zip_bomb_storage_fails_fast():
    """3 MB of deflate that expands to 3 GiB of zeros, declared honestly in the directory."""
    nbytes = 3 << 30
    bomb = pth_craft.zeros_deflate_bomb(nbytes)
    pkl = pth_craft.state_dict({"w": pth_craft.rebuild(pth_craft.storage("0", nbytes // 4), 0,
                                                       (nbytes // 4,), (1,))})
    data = pth_craft.raw_zip([("archive/data.pkl", pkl, 0, len(pkl), zlib.crc32(pkl)),
                              ("archive/data/0", bomb, zipfile.ZIP_DEFLATED, nbytes, 0)])
    assert len(data) < 4 << 20
    start = time.perf_counter()
    with pytest.raises(CorruptCheckpointError, match="more than the whole file"):
        _load_bytes(data)
    assert time.perf_counter() - start < 1.0
    # Deflated but small enough to fit the budget: still refused, by its method alone.
    small = zlib.compress(bytes(64))[2:-4]
    pkl = pth_craft.state_dict({"w": pth_craft.rebuild(pth_craft.storage("0", 16), 0, (16,),
                                                       (1,))})
    data = pth_craft.raw_zip([("archive/data.pkl", pkl, 0, len(pkl), zlib.crc32(pkl)),
                              ("archive/data/0", small, zipfile.ZIP_DEFLATED, 64,
                               zlib.crc32(bytes(64)))])
    with pytest.raises(UnsafeCheckpointError, match="is compressed"):
        _load_bytes(data)


def _refused_mutations():
    """Files that try to change the allow-listed stand-ins; each must be refused."""
    tensor = pth_craft.rebuild(pth_craft.storage("0", 1), 0, (1,), (1,))
    set_dtype = pth_craft.EMPTY_DICT + pth_craft.text("dtype") + pth_craft.text("float64") \
        + pth_craft.SETITEM + pth_craft.BUILD
    set_defaults = (b"N" + pth_craft.EMPTY_DICT + pth_craft.text("__defaults__")
                    + pth_craft.tup([pth_craft.integer(1)]) + pth_craft.SETITEM + b"\x86"
                    + pth_craft.BUILD)
    return {
        "storage type dtype": pth_craft.glob("torch", "FloatStorage") + set_dtype,
        "rebuild defaults": pth_craft.glob("torch._utils", "_rebuild_tensor_v2") + set_defaults,
        "OrderedDict class": pth_craft.glob("collections", "OrderedDict") + set_dtype,
        "a rebuilt tensor": tensor + set_dtype,
    }


@pytest.mark.parametrize("target", list(_refused_mutations()))
def test_build_on_allow_listed_objects_is_refused_and_changes_nothing(target):
    golden = os.path.join(GOLDEN, "var_tiny_saln.pth")
    before = load_torch_state_dict(golden)
    pkl = pth_craft.state_dict({"w": _refused_mutations()[target]})
    with pytest.raises(UnsafeCheckpointError, match="BUILD"):
        _load_bytes(pth_craft.write_pth(pkl, {"0": bytes(4)}))
    after = load_torch_state_dict(golden)
    assert list(after) == list(before)
    for k in before:
        assert after[k].dtype == before[k].dtype
        np.testing.assert_array_equal(after[k], before[k])


def test_torch_metadata_build_is_accepted_and_dropped():
    tensor = pth_craft.rebuild(pth_craft.storage("0", 1), 0, (1,), (1,))
    meta = (pth_craft.EMPTY_DICT + pth_craft.text("_metadata") + pth_craft.EMPTY_DICT
            + pth_craft.SETITEM + pth_craft.BUILD)
    pkl = pth_craft.PROTO2 + pth_craft.EMPTY_DICT + pth_craft.text("w") + tensor \
        + pth_craft.SETITEM + meta + pth_craft.STOP
    sd = _load_bytes(pth_craft.write_pth(pkl, {"0": np.float32(3).tobytes()}))
    assert list(sd) == ["w"] and sd["w"][0] == 3.0


def test_memo_index_far_out_is_not_preallocated():
    """LONG_BINPUT 2**32-1 would make a list-backed memo allocate 32 GB."""
    tensor = pth_craft.rebuild(pth_craft.storage("0", 1), 0, (1,), (1,))
    pkl = pth_craft.PROTO2 + pth_craft.EMPTY_DICT + pth_craft.text("w") + tensor \
        + b"r\xff\xff\xff\xff" + pth_craft.SETITEM + pth_craft.STOP
    assert _load_bytes(pth_craft.write_pth(pkl, {"0": bytes(4)}))["w"].shape == (1,)


def test_refused_global_is_named_and_cli_prints_it(tmp_path, capsys):
    from var_jax.cli import main

    path = tmp_path / "evil.pth"
    pkl = pth_craft.PROTO2 + pth_craft.glob("os", "system") + pth_craft.tup(
        [pth_craft.text("true")]) + pth_craft.REDUCE + pth_craft.STOP
    path.write_bytes(pth_craft.write_pth(pkl))
    assert main(["convert", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "os.system" in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_progress_reports_every_storage_byte():
    """The byte progress of a load adds up to the tensors' bytes (the CLI's progress bar)."""
    reported = []
    sd = load_torch_state_dict(os.path.join(GOLDEN, "vae.pth"), progress=reported.append)
    assert reported and all(n > 0 for n in reported)
    assert sum(reported) == sum(a.nbytes for a in sd.values())
