"""Test helper: write torch-format `.pth` files by hand (valid ones and crafted attacks).

Pickles are assembled from opcodes, so tests can express what torch.save writes and what an
attacker could write instead, without PyTorch.
"""
import io
import struct
import zipfile

import numpy as np

PROTO2 = b"\x80\x02"
MARK, STOP, TUPLE, REDUCE, BUILD, BINPERSID = b"(", b".", b"t", b"R", b"b", b"Q"
EMPTY_DICT, EMPTY_TUPLE, SETITEM, SETITEMS, NEWFALSE = b"}", b")", b"s", b"u", b"\x89"

_STORAGE = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
            np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
            np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage",
            np.dtype(np.bool_): "BoolStorage"}


def glob(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(s):
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def integer(n):
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -2**31 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def tup(items):
    return MARK + b"".join(items) + TUPLE


def storage(key, numel, storage_type="FloatStorage"):
    """The persistent id torch.save writes for storage `data/<key>`."""
    return tup([text("storage"), glob("torch", storage_type), text(key), text("cpu"),
                integer(numel)]) + BINPERSID


def rebuild(storage_ops, offset, size, stride):
    """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`."""
    return (glob("torch._utils", "_rebuild_tensor_v2")
            + tup([storage_ops, integer(offset), tup(map(integer, size)),
                   tup(map(integer, stride)), NEWFALSE,
                   glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE])
            + REDUCE)


def state_dict(entries):
    """A pickle of a dict {name: value ops}, as torch.save writes a state dict."""
    body = b"".join(text(k) + v for k, v in entries.items())
    return PROTO2 + EMPTY_DICT + MARK + body + SETITEMS + STOP


def write_pth(pkl, storages=None, compress=zipfile.ZIP_STORED, extra=None):
    """The bytes of a torch-style zip: `archive/data.pkl`, byteorder, `archive/data/<key>`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            z.writestr(f"archive/data/{key}", data, compress_type=compress)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def pth_from_arrays(arrays):
    """A valid `.pth` (bytes) holding `arrays`, one contiguous storage each."""
    entries, storages = {}, {}
    for i, (name, a) in enumerate(arrays.items()):
        a = np.array(a, order="C")
        strides = tuple(s // a.itemsize for s in a.strides)
        entries[name] = rebuild(storage(str(i), a.size, _STORAGE[a.dtype]), 0, a.shape, strides)
        storages[str(i)] = a.tobytes()
    return write_pth(state_dict(entries), storages)


def raw_zip(local, central=None):
    """Zip bytes written field by field, so tests can make archives zipfile would not.

    `local`: (name, stored bytes, method, uncompressed size, crc) per entry, in file order.
    `central`: (name, index into `local`) per directory record; several records may point at
    the same entry's data (an overlapping archive). Default: one record per entry.
    """
    central = central if central is not None else [(e[0], i) for i, e in enumerate(local)]
    out, offsets = bytearray(), []
    for name, data, method, size, crc in local:
        offsets.append(len(out))
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data),
                           size, len(name.encode()), 0) + name.encode() + data
    cd_start = len(out)
    for name, i in central:
        _, data, method, size, crc = local[i]
        out += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc,
                           len(data), size, len(name.encode()), 0, 0, 0, 0, 0,
                           offsets[i]) + name.encode()
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central),
                       len(out) - cd_start, cd_start, 0)
    return bytes(out)


def zeros_deflate_bomb(nbytes, chunk=1 << 24):
    """A raw deflate stream of `nbytes` zeros (a multiple of `chunk`), built from one
    compressed chunk repeated: gigabytes in a few megabytes, made in well under a second."""
    import zlib
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(chunk)
    first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    assert nbytes % chunk == 0 and nbytes >= 2 * chunk
    return first + again * (nbytes // chunk - 1) + c.flush()
