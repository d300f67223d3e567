"""Test helper: random mutations of a valid `.pth` (pickle opcodes, zip headers, raw bytes).

`Seed(path)` splits a torch-written file into its pickle and its other entries, so a mutated
pickle is re-zipped cheaply around the original storages; `mutants(seed, rng, n)` yields
(description, file bytes) pairs, a mix of every kind below.
"""
import io
import pickletools
import struct
import zipfile
import zlib

import pth_craft

_EXTREME_INTS = [0, 1, -1, 255, 65535, 2**31 - 1, -2**31, 2**32, 2**62, 2**63, -2**63, 2**64,
                 10**30]


class Seed:
    def __init__(self, path):
        self.data = open(path, "rb").read()
        with zipfile.ZipFile(io.BytesIO(self.data)) as z:
            infos = z.infolist()
            self.pkl_name = next(i.filename for i in infos if i.filename.endswith("data.pkl"))
            self.pkl = z.read(self.pkl_name)
            self.others = [(i.filename, z.read(i.filename), 0, i.file_size, i.CRC)
                           for i in infos if i.filename != self.pkl_name]
            self.header_offsets = [i.header_offset for i in infos]
        self.numels = {n.rsplit("/", 1)[1]: size // 4 for n, _, _, size, _ in self.others
                       if "/data/" in n}  # the golden storages are float32
        self.cd_start = struct.unpack("<L", self.data[-6:-2])[0]
        self.records, pos = [], self.cd_start
        while self.data[pos:pos + 4] == b"PK\x01\x02":
            self.records.append(pos)
            pos += 46 + sum(struct.unpack("<3H", self.data[pos + 28:pos + 34]))
        self.op_starts = [pos for _, _, pos in pickletools.genops(self.pkl)] + [len(self.pkl)]
        self.int_ops = [(pos, self.op_starts[k + 1]) for k, (op, _, pos)
                        in enumerate(pickletools.genops(self.pkl)) if op.code in "KMJ\x8a"]

    def rezip(self, pkl):
        """The seed's archive with `pkl` as its pickle (valid zip, CRC recomputed)."""
        return pth_craft.raw_zip([(self.pkl_name, pkl, 0, len(pkl), zlib.crc32(pkl))]
                                 + self.others)


def _span(seed, rng):
    k = int(rng.integers(0, len(seed.op_starts) - 1))
    n = int(rng.integers(1, 9))
    return seed.op_starts[k], seed.op_starts[min(k + n, len(seed.op_starts) - 1)]


def _boundary(seed, rng):
    return seed.op_starts[int(rng.integers(0, len(seed.op_starts)))]


def _flip(data, rng, lo=0, hi=None, count=None):
    out = bytearray(data)
    hi = len(out) if hi is None else min(hi, len(out))
    for _ in range(count or int(rng.integers(1, 4))):
        out[int(rng.integers(lo, hi))] = int(rng.integers(0, 256))
    return bytes(out)


_GLOBALS = [("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
            ("torch._utils", "_rebuild_parameter"), ("torch", "FloatStorage"),
            ("torch", "HalfStorage"), ("torch", "BoolStorage"), ("builtins", "getattr"),
            ("os", "system")]
_PLAIN_OPS = [b"(", b"0", b"1", b"2", b"N", b"\x88", b"\x89", b"G" + bytes(8), b")", b"t",
              b"\x85", b"\x86", b"\x87", b"]", b"l", b"a", b"e", b"}", b"d", b"s", b"u",
              b"\x94", b"\x93", b"R", b"Q", b"b"]


def _random_piece(seed, rng):
    kind = int(rng.integers(0, 8))
    if kind == 0:
        return pth_craft.integer(_EXTREME_INTS[int(rng.integers(0, len(_EXTREME_INTS)))])
    if kind == 1:
        return pth_craft.text(["storage", "cpu", "0", "1", "w", "_metadata"][
            int(rng.integers(0, 6))])
    if kind == 2:
        return pth_craft.glob(*_GLOBALS[int(rng.integers(0, len(_GLOBALS)))])
    if kind == 3:
        return (b"q" if rng.integers(0, 2) else b"h") + bytes([int(rng.integers(0, 4))])
    if kind == 4:  # a well-formed tensor with random geometry over storage 0 or 1
        ndim = int(rng.integers(0, 4))
        dims = [tuple(int(v) for v in rng.integers(-1, 40, ndim)) for _ in range(2)]
        key = str(int(rng.integers(0, 2)))
        numel = seed.numels[key] if rng.integers(0, 4) else int(rng.integers(0, 4000))
        return pth_craft.rebuild(pth_craft.storage(key, numel), int(rng.integers(0, 50)), *dims)
    return _PLAIN_OPS[int(rng.integers(0, len(_PLAIN_OPS)))]


def random_program(seed, rng):
    """A pickle of 1-40 random pieces (opcodes, globals, storages, whole tensors), then STOP."""
    body = b"".join(_random_piece(seed, rng) for _ in range(int(rng.integers(1, 41))))
    return pth_craft.PROTO2 + body + pth_craft.STOP


def _pickle_mutant(seed, rng):
    p = seed.pkl
    kind = int(rng.integers(0, 7))
    if kind == 6:
        return "random opcode program", random_program(seed, rng)
    if kind == 0:
        return "pickle byte flip", _flip(p, rng)
    if kind == 1:
        return "pickle truncated", p[:int(rng.integers(0, len(p)))]
    if kind == 2:
        a, b = _span(seed, rng)
        c = _boundary(seed, rng)
        return f"pickle ops [{a}:{b}] spliced at {c}", p[:c] + p[a:b] + p[c:]
    if kind == 3:
        a, b = _span(seed, rng)
        return f"pickle ops [{a}:{b}] deleted", p[:a] + p[b:]
    if kind == 4:
        a, b = _span(seed, rng)
        return f"pickle ops [{a}:{b}] duplicated", p[:b] + p[a:b] + p[b:]
    a, b = seed.int_ops[int(rng.integers(0, len(seed.int_ops)))]
    value = _EXTREME_INTS[int(rng.integers(0, len(_EXTREME_INTS)))]
    return f"pickle int at {a} -> {value}", p[:a] + pth_craft.integer(value) + p[b:]


def _zip_mutant(seed, rng):
    d = seed.data
    kind = int(rng.integers(0, 5))
    if kind == 0:
        off = seed.header_offsets[int(rng.integers(0, len(seed.header_offsets)))]
        return f"local header flip near {off}", _flip(d, rng, off, off + 30)
    if kind == 1:
        return "central directory flip", _flip(d, rng, seed.cd_start)
    if kind == 2:  # one field of one directory record set to a random value
        rec = seed.records[int(rng.integers(0, len(seed.records)))]
        field, width = [(10, 2), (16, 4), (20, 4), (24, 4), (28, 2), (42, 4)][
            int(rng.integers(0, 6))]
        value = int(rng.integers(0, 256 ** width, dtype="uint64"))
        return (f"directory record at {rec} field +{field} -> {value}",
                d[:rec + field] + value.to_bytes(width, "little") + d[rec + field + width:])
    if kind == 3:
        return "file truncated", d[:int(rng.integers(0, len(d)))]
    return "file byte flip", _flip(d, rng)


def mutants(seed, rng, n):
    """`n` (description, bytes) mutants of `seed`: half pickle-level, half zip-level."""
    for i in range(n):
        if i % 2:
            yield _zip_mutant(seed, rng)
        else:
            desc, pkl = _pickle_mutant(seed, rng)
            yield desc, seed.rezip(pkl)
