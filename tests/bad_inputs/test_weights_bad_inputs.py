"""Bad-input catalogue, weights part: each crafted or damaged weights file, as a table row of
(what it is, how to make it, the exception type expected, a phrase of the message)."""
import io
import os
import zipfile
import zlib

import numpy as np
import pytest

import pth_craft as c
from var_jax.weights.torch_zip import (CorruptCheckpointError, UnsafeCheckpointError,
                                       load_torch_state_dict)

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "golden")
Unsafe, Corrupt = UnsafeCheckpointError, CorruptCheckpointError


def _tensor(key="0", numel=4, size=(4,), stride=(1,), offset=0):
    return c.rebuild(c.storage(key, numel), offset, size, stride)


def _one(value_ops, storages=None):
    """A state dict {'w': value_ops} with storage '0' of 4 floats unless told otherwise."""
    return c.write_pth(c.state_dict({"w": value_ops}),
                       {"0": bytes(16)} if storages is None else storages)


def _pickle(ops):
    return c.write_pth(c.PROTO2 + ops + c.STOP, {"0": bytes(16)})


def _call(module, name, arg="id"):
    return c.glob(module, name) + c.tup([c.text(arg)]) + c.REDUCE


def _build_on(target_ops, state_ops=c.EMPTY_DICT + c.text("dtype") + c.text("x") + c.SETITEM):
    return target_ops + state_ops + c.BUILD


def _golden_entries(edit):
    """var_tiny_saln.pth re-zipped with `edit(name, data) -> data or None (drop)`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(os.path.join(GOLDEN, "var_tiny_saln.pth")) as src, \
            zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            data = edit(info.filename, src.read(info.filename))
            if data is not None:
                out.writestr(info.filename, data)
    return buf.getvalue()


def _golden_bytes():
    with open(os.path.join(GOLDEN, "var_tiny_saln.pth"), "rb") as f:
        return f.read()


def _flip_storage_byte():
    data = bytearray(_golden_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo("var_tiny_saln/data/3")
    data[info.header_offset + 200] ^= 0xFF  # inside the storage (the local header is < 200 B)
    return bytes(data)


def _bomb():
    n = 3 << 30
    pkl = c.state_dict({"w": _tensor(numel=n // 4, size=(n // 4,))})
    return c.raw_zip([("archive/data.pkl", pkl, 0, len(pkl), zlib.crc32(pkl)),
                      ("archive/data/0", c.zeros_deflate_bomb(n), zipfile.ZIP_DEFLATED, n, 0)])


def _deflated(name):
    pkl = c.state_dict({"w": _tensor()})
    entries = {"archive/data.pkl": pkl, "archive/data/0": bytes(16)}
    return c.raw_zip([(k, zlib.compress(v)[2:-4] if k == name else v,
                       zipfile.ZIP_DEFLATED if k == name else 0, len(v), zlib.crc32(v))
                      for k, v in entries.items()])


def _overlapping():
    keys = [f"{i:03d}" for i in range(200)]
    pkl = c.state_dict({k: _tensor(k, 25, (25,)) for k in keys})
    local = [("archive/data.pkl", pkl, 0, len(pkl), zlib.crc32(pkl)),
             ("archive/data/000", bytes(100), 0, 100, zlib.crc32(bytes(100)))]
    return c.raw_zip(local, [("archive/data.pkl", 0)] + [(f"archive/data/{k}", 1) for k in keys])


def _duplicate_names():
    pkl = c.state_dict({"w": _tensor()})
    e = ("archive/data/0", bytes(16), 0, 16, zlib.crc32(bytes(16)))
    return c.raw_zip([("archive/data.pkl", pkl, 0, len(pkl), zlib.crc32(pkl)), e, e])


def _encrypted():
    data = bytearray(_one(_tensor()))
    pos = data.find(b"PK\x01\x02")
    data[pos + 8] |= 1  # general-purpose flag bit 0 of the first directory record
    return bytes(data)


def _deep_tuple_pid():
    return _one(c.glob("torch._utils", "_rebuild_tensor_v2") + c.tup(
        [c.EMPTY_TUPLE + b"\x85" * 200_000 + c.BINPERSID]) + c.REDUCE)


# (description, bytes of the file, expected exception, phrase of the message)
CASES = [
    ("GLOBAL os.system", lambda: _pickle(_call("os", "system")), Unsafe, "os.system"),
    ("GLOBAL posix.system", lambda: _pickle(_call("posix", "system")), Unsafe, "posix.system"),
    ("GLOBAL builtins.eval", lambda: _pickle(_call("builtins", "eval")), Unsafe,
     "builtins.eval, which is not a tensor-rebuild or container global"),
    ("STACK_GLOBAL builtins.exec",
     lambda: _pickle(c.text("builtins") + c.text("exec") + b"\x93" + c.tup([c.text("1")])
                     + c.REDUCE), Unsafe, "builtins.exec"),
    ("GLOBAL numpy reconstruct (a numpy pickle, not a torch one)",
     lambda: _pickle(_call("numpy.core.multiarray", "_reconstruct")), Unsafe,
     "numpy.core.multiarray._reconstruct"),
    ("REDUCE on a storage type", lambda: _pickle(c.glob("torch", "FloatStorage")
                                                 + c.EMPTY_TUPLE + c.REDUCE), Unsafe,
     "calls the storage type torch.FloatStorage"),
    ("BUILD on an allow-listed storage type",
     lambda: _one(_build_on(c.glob("torch", "FloatStorage"))), Unsafe, "(BUILD)"),
    ("BUILD setting _rebuild_tensor_v2.__defaults__",
     lambda: _one(_build_on(c.glob("torch._utils", "_rebuild_tensor_v2"),
                            b"N" + c.EMPTY_DICT + c.text("__defaults__") + c.EMPTY_TUPLE
                            + c.SETITEM + b"\x86")), Unsafe,
     "sets the state of the allow-listed global _rebuild_tensor_v2"),
    ("BUILD on the OrderedDict global", lambda: _one(_build_on(c.glob("collections",
                                                                      "OrderedDict"))),
     Unsafe, "(BUILD)"),
    ("BUILD on a rebuilt tensor", lambda: _one(_build_on(_tensor())), Unsafe,
     "sets the state of a tensor rebuilt earlier"),
    ("BUILD on the state dict beyond _metadata",
     lambda: c.write_pth(c.PROTO2 + c.EMPTY_DICT + _build_on(b"") + c.STOP), Unsafe,
     "only carries torch's '_metadata'"),
    ("heap read: a rebuilt tensor as the storage of a 2-D tensor",
     lambda: _one(c.rebuild(_tensor(), 0, (2, 4096), (4096, 1))), Unsafe,
     "storage is a tensor rebuilt earlier in the pickle"),
    ("an int as storage", lambda: _one(c.rebuild(c.integer(7), 0, (1,), (1,))), Unsafe,
     "storage is an int, not a storage from the archive"),
    ("a tuple as storage", lambda: _one(c.rebuild(c.tup([c.integer(1)]), 0, (1,), (1,))),
     Unsafe, "not a storage from the archive"),
    ("offset past the storage", lambda: _one(_tensor(offset=1)), Corrupt,
     "reaches element 4 of storage '0', which holds 4 elements"),
    ("2-D rows beyond the storage (checked in elements)",
     lambda: _one(_tensor(size=(2, 4), stride=(4, 1))), Corrupt, "reaches element 7"),
    ("negative stride", lambda: _one(_tensor(size=(2,), stride=(-1,))), Corrupt,
     "negative tensor geometry"),
    ("negative size", lambda: _one(_tensor(size=(-2,), stride=(1,))), Corrupt,
     "negative tensor geometry"),
    ("negative offset", lambda: _one(_tensor(size=(1,), offset=-1)), Corrupt,
     "negative tensor geometry"),
    ("size and stride of different lengths", lambda: _one(_tensor(size=(2, 2), stride=(1,))),
     Corrupt, "invalid tensor geometry"),
    ("a float in the size",
     lambda: _one(c.glob("torch._utils", "_rebuild_tensor_v2") + c.tup(
         [c.storage("0", 4), c.integer(0), c.tup([b"G" + np.float64(2).byteswap().tobytes()]),
          c.tup([c.integer(1)]), c.NEWFALSE, c.EMPTY_DICT]) + c.REDUCE), Corrupt,
     "size is a tuple of (float)"),
    ("65 dimensions", lambda: _one(_tensor(size=(1,) * 65, stride=(1,) * 65)), Corrupt,
     "at most 64"),
    ("an empty tensor with a 2**62 dimension", lambda: _one(_tensor(size=(0, 2**62, 2**62),
                                                                 stride=(1, 1, 1))),
     Corrupt, "would have more than 2**48 elements"),
    ("stride-0 shape of terabytes", lambda: _one(_tensor(numel=1, size=(2**20, 2**20),
                                                         stride=(0, 0)), {"0": bytes(4)}),
     Corrupt, "far more than the file"),
    ("storage declared bigger than its entry", lambda: _one(_tensor(numel=8)), Corrupt,
     "holds 16 bytes, but the pickle declares 8 x FloatStorage = 32 bytes"),
    ("storage entry bigger than declared", lambda: _one(_tensor(), {"0": bytes(20)}), Corrupt,
     "holds 20 bytes, but the pickle declares"),
    ("storage entry missing", lambda: _one(_tensor(), {}), Corrupt, "missing from the archive"),
    ("zip bomb: 3 MB of deflate that expands to 3 GiB", _bomb, Corrupt,
     "more than the whole file"),
    ("deflated storage entry", lambda: _deflated("archive/data/0"), Unsafe,
     "is compressed (zip method 8)"),
    ("deflated pickle entry", lambda: _deflated("archive/data.pkl"), Unsafe, "is compressed"),
    ("200 directory records over one entry's data", _overlapping, Corrupt,
     "points at the data of another entry"),
    ("an entry listed twice", _duplicate_names, Corrupt, "lists entry 'archive/data/0' twice"),
    ("encrypted entry", _encrypted, Corrupt, "is encrypted"),
    ("a flipped byte in a storage", _flip_storage_byte, Corrupt, "fails its CRC check"),
    ("file cut in half", lambda: _golden_bytes()[:len(_golden_bytes()) // 2], Corrupt,
     "not a PyTorch zip checkpoint"),
    ("legacy (pre-1.6) pickle file", lambda: b"\x80\x02}q\x00.", Corrupt,
     "legacy pre-1.6 format"),
    ("no data.pkl", lambda: _golden_entries(lambda n, d: None if n.endswith(".pkl") else d),
     Corrupt, "expected exactly one '<name>/data.pkl'"),
    ("two data.pkl", lambda: c.write_pth(c.state_dict({}), extra={"other/data.pkl": b"."}),
     Corrupt, "expected exactly one"),
    ("unknown byteorder",
     lambda: _golden_entries(lambda n, d: b"middle" if n.endswith("byteorder") else d),
     Corrupt, "unknown byteorder"),
    ("pickle without STOP", lambda: c.write_pth(c.PROTO2 + c.EMPTY_DICT), Corrupt,
     "ends without STOP"),
    ("pickle cut inside an opcode", lambda: c.write_pth(c.PROTO2 + b"X\xff\x00"), Corrupt,
     "pickle truncated"),
    ("opcode torch.save never writes (NEWOBJ)",
     lambda: _pickle(c.glob("collections", "OrderedDict") + c.EMPTY_TUPLE + b"\x81"), Corrupt,
     "is not one torch.save writes"),
    ("memo slot never set", lambda: _pickle(b"h\x07"), Corrupt, "memo slot 7, which was never"),
    ("a 100-byte integer", lambda: _pickle(b"\x8b" + (100).to_bytes(4, "little") + bytes(100)),
     Corrupt, "integer of 100 bytes"),
    ("non-UTF-8 string", lambda: _pickle(b"X\x02\x00\x00\x00\xff\xfe"), Corrupt,
     "is not UTF-8"),
    ("a tuple as dict key", lambda: c.write_pth(c.PROTO2 + c.EMPTY_DICT + c.EMPTY_TUPLE
                                                + c.integer(1) + c.SETITEM + c.STOP), Corrupt,
     "dict key is a tuple of (), not a string"),
    ("a state dict holding an int", lambda: c.write_pth(c.state_dict({"epoch": c.integer(3)})),
     Corrupt, "'epoch' is an int, not a tensor"),
    ("a list instead of a state dict", lambda: _pickle(b"]"), Corrupt,
     "holds a list, not a state dict"),
    ("persistent id that is not a storage", lambda: _one(c.rebuild(
        c.tup([c.text("module"), c.text("x")]) + c.BINPERSID, 0, (1,), (1,))), Corrupt,
     "unexpected persistent id: a tuple of (str, str)"),
    ("persistent id nested 200000 deep", _deep_tuple_pid, Corrupt,
     "unexpected persistent id: a tuple of (tuple)"),
    ("one storage declared with two sizes",
     lambda: c.write_pth(c.state_dict({"a": _tensor(), "b": _tensor(numel=3, size=(3,))}),
                         {"0": bytes(16)}), Corrupt, "declared twice with different"),
]


@pytest.mark.parametrize("make, error, phrase",
                         [pytest.param(m, e, p, id=d) for d, m, e, p in CASES])
def test_bad_weights_file_is_refused_clearly(make, error, phrase):
    with pytest.raises(error) as info:
        load_torch_state_dict(io.BytesIO(make()))
    assert phrase in str(info.value)
    assert "<file object>: refusing to load: " in str(info.value)
