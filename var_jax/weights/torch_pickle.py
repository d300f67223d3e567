"""A restricted pickle machine for the `data.pkl` of a PyTorch checkpoint: it runs no code.

It knows the ~40 opcodes `torch.save` emits (protocols 2-5). Globals resolve to immutable
stand-ins made fresh per load; REDUCE calls only those stand-ins; BUILD is refused except the
`_metadata` that torch attaches to a state dict, which is dropped. Tensors come back as
`TensorRef`s: validated geometry over a `StorageRef`, not yet read from the archive.
"""
from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any, Callable

import ml_dtypes
import numpy as np

MAX_NDIM = 64
MAX_ELEMENTS = 1 << 48  # more than any real tensor, and few enough for numpy's index type


class CheckpointFormatError(ValueError):
    """A checkpoint file that var_jax refuses to load; the message says why and what to do."""


class UnsafeCheckpointError(CheckpointFormatError):
    """The checkpoint's pickle asks for a global or an operation outside the allow-list."""
    advice = "Do not use this file; get the weights from their official source."


class CorruptCheckpointError(CheckpointFormatError):
    """The file is not a readable, self-consistent PyTorch zip checkpoint."""
    advice = ("Download the file again, or re-save it with "
              "torch.save(model.state_dict(), path).")


STORAGE_DTYPES = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


@dataclasses.dataclass(frozen=True, eq=False)
class StorageType:
    """Stand-in for `torch.<X>Storage`: only names the element dtype."""
    name: str
    dtype: np.dtype


@dataclasses.dataclass(frozen=True, eq=False)
class StorageRef:
    """A storage the pickle declared: zip entry `data/<key>` of `numel` elements of `dtype`."""
    key: str
    dtype: np.dtype
    numel: int


@dataclasses.dataclass(frozen=True, eq=False)
class TensorRef:
    """A tensor whose every element lies inside its storage (checked in elements)."""
    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True, eq=False)
class _Callable:
    """Stand-in for an allow-listed callable global; REDUCE calls `fn(args)`."""
    qualname: str
    fn: Callable[[tuple], Any]


def _is_int(x: Any) -> bool:
    return type(x) is int


def describe(x: Any) -> str:
    """What a pickled value is, in a few words; never its repr (which could be huge or deep)."""
    if type(x) is TensorRef:
        return "a tensor rebuilt earlier in the pickle"
    if type(x) is _Callable:
        return f"the allow-listed global {x.qualname}"
    if type(x) is StorageType:
        return f"the storage type torch.{x.name}"
    if type(x) is tuple and len(x) <= 8:
        return f"a tuple of ({', '.join(type(v).__name__ for v in x)})"
    name = type(x).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _rebuild_tensor_v2(args: tuple) -> TensorRef:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, grad, hooks[, meta])."""
    if len(args) not in (6, 7):
        raise CorruptCheckpointError(f"_rebuild_tensor_v2 takes 6 or 7 arguments, got {len(args)}")
    storage, offset, size, stride = args[:4]
    if type(storage) is not StorageRef:
        raise UnsafeCheckpointError(
            f"a tensor's storage is {describe(storage)}, not a storage from the archive "
            "(a crafted pickle reading memory it does not own)")
    if not (type(size) is tuple and type(stride) is tuple and len(size) == len(stride)
            and len(size) <= MAX_NDIM and all(map(_is_int, size + stride)) and _is_int(offset)):
        raise CorruptCheckpointError(
            f"invalid tensor geometry: size is {describe(size)}, stride {describe(stride)}, "
            f"offset {describe(offset)}; they must be integers, size and stride of one length "
            f"(at most {MAX_NDIM})")
    if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise CorruptCheckpointError(
            f"negative tensor geometry: size {size}, stride {stride}, offset {offset}")
    if math.prod(n for n in size if n) > MAX_ELEMENTS:
        raise CorruptCheckpointError(
            f"a tensor of size {size} would have more than 2**48 elements")
    if 0 in size:
        end = offset
    else:
        end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if end > storage.numel:
        raise CorruptCheckpointError(
            f"a tensor of size {size} (offset {offset}, stride {stride}) reaches element "
            f"{end - 1} of storage '{storage.key}', which holds {storage.numel} elements")
    return TensorRef(storage, offset, size, stride)


def _rebuild_parameter(args: tuple) -> TensorRef:
    """torch._utils._rebuild_parameter(data, requires_grad, hooks[, state]): the data tensor."""
    if len(args) not in (3, 4) or type(args[0]) is not TensorRef:
        raise CorruptCheckpointError("_rebuild_parameter expects (tensor, requires_grad, hooks)")
    return args[0]


def _ordered_dict(args: tuple) -> dict:
    if args != ():
        raise CorruptCheckpointError("collections.OrderedDict is rebuilt with arguments; "
                                     "a state dict's items come from SETITEMS")
    return {}


def _fresh_globals() -> dict[tuple[str, str], Any]:
    return {
        ("collections", "OrderedDict"): _Callable("collections.OrderedDict", _ordered_dict),
        ("torch._utils", "_rebuild_tensor_v2"): _Callable("_rebuild_tensor_v2",
                                                          _rebuild_tensor_v2),
        ("torch._utils", "_rebuild_parameter"): _Callable("_rebuild_parameter",
                                                          _rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"): _Callable(
            "_rebuild_parameter_with_state", _rebuild_parameter),
        **{("torch", n): StorageType(n, d) for n, d in STORAGE_DTYPES.items()},
    }


class _Machine:
    """One run of the pickle: a stack, marks and a memo over `data`; nothing outside them."""

    def __init__(self, data: bytes, persistent_load: Callable[[Any], StorageRef]):
        self.data, self.pos = data, 0
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.globals = _fresh_globals()
        self.persistent_load = persistent_load

    # -- reading the byte stream
    def read(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CorruptCheckpointError(
                f"pickle truncated: an opcode at byte {self.pos} needs {n} more bytes")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def readline(self) -> str:
        end = self.data.find(b"\n", self.pos, self.pos + 1024)
        if end < 0:
            raise CorruptCheckpointError(f"pickle global name at byte {self.pos} is unterminated")
        line = self.read(end + 1 - self.pos)[:-1]
        return self.text(line)

    def text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptCheckpointError(f"pickle string before byte {self.pos} is not UTF-8")

    # -- the stack
    def push(self, x: Any) -> None:
        self.stack.append(x)

    def pop(self) -> Any:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise CorruptCheckpointError(f"pickle stack underflow at byte {self.pos}")
        return self.stack.pop()

    def pop_mark(self) -> list:
        if not self.marks:
            raise CorruptCheckpointError(f"pickle has no MARK for the opcode at byte {self.pos}")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def top(self, kind: type) -> Any:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0) or \
                type(self.stack[-1]) is not kind:
            raise CorruptCheckpointError(
                f"pickle opcode at byte {self.pos} needs a {kind.__name__} on the stack")
        return self.stack[-1]

    # -- objects
    def set_items(self, d: dict, items: list) -> None:
        if len(items) % 2:
            raise CorruptCheckpointError(f"pickle SETITEMS at byte {self.pos} has an odd count")
        for k, v in zip(items[::2], items[1::2]):
            if type(k) not in (str, int):
                raise CorruptCheckpointError(f"pickle dict key is {describe(k)}, not a string")
            d[k] = v

    def find_global(self, module: Any, name: Any) -> Any:
        if type(module) is not str or type(name) is not str:
            raise CorruptCheckpointError(f"pickle global name at byte {self.pos} is not text")
        try:
            return self.globals[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"its pickle asks for the global {ascii(module)[1:-1]:.100}."
                f"{ascii(name)[1:-1]:.100}, which is not a tensor-rebuild or container global; "
                "a weights file never needs it, so the file may be malicious. Nothing was "
                "executed") from None

    def reduce(self) -> None:
        args, fn = self.pop(), self.pop()
        if type(fn) is not _Callable:
            raise UnsafeCheckpointError(
                f"its pickle calls {describe(fn)}: only tensor-rebuild and container globals "
                "may be called. Nothing was executed")
        if type(args) is not tuple:
            raise CorruptCheckpointError(f"pickle calls {fn.qualname} with {describe(args)}")
        self.push(fn.fn(args))

    def build(self) -> None:
        state = self.pop()
        inst = self.stack[-1] if self.stack else None
        if not (type(inst) is dict and type(state) is dict and set(state) <= {"_metadata"}):
            raise UnsafeCheckpointError(
                f"its pickle sets the state of {describe(inst)} (BUILD): a state dict only "
                "carries torch's '_metadata'. Nothing was changed or executed")

    def memo_get(self, i: int) -> None:
        if i not in self.memo:
            raise CorruptCheckpointError(f"pickle reads memo slot {i}, which was never set")
        self.push(self.memo[i])

    def memo_put(self, i: int) -> None:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise CorruptCheckpointError(f"pickle memoizes an empty stack at byte {self.pos}")
        self.memo[i] = self.stack[-1]

    def run(self) -> Any:
        ops = _OPS
        while True:
            if self.pos >= len(self.data):
                raise CorruptCheckpointError("pickle ends without STOP: the file is truncated")
            code = self.data[self.pos]
            self.pos += 1
            if code == 0x2E:  # STOP
                if len(self.stack) != 1 or self.marks:
                    raise CorruptCheckpointError("pickle stops with a malformed stack")
                return self.stack[0]
            op = ops.get(code)
            if op is None:
                raise CorruptCheckpointError(
                    f"pickle opcode {bytes([code])!r} at byte {self.pos - 1} is not one "
                    "torch.save writes")
            op(self)


def _proto(m: _Machine) -> None:
    if m.read(1)[0] > 5:
        raise CorruptCheckpointError("pickle protocol above 5")


def _long(m: _Machine, n: int) -> None:
    if n > 64:
        raise CorruptCheckpointError(f"pickle integer of {n} bytes")
    m.push(int.from_bytes(m.read(n), "little", signed=True))


def _pop(m: _Machine) -> None:
    if len(m.stack) > (m.marks[-1] if m.marks else 0):
        m.stack.pop()
    else:
        m.pop_mark()


def _append(m: _Machine) -> None:
    x = m.pop()
    m.top(list).append(x)


def _appends(m: _Machine) -> None:
    items = m.pop_mark()
    m.top(list).extend(items)


def _setitem(m: _Machine) -> None:
    v, k = m.pop(), m.pop()
    m.set_items(m.top(dict), [k, v])


def _setitems(m: _Machine) -> None:
    items = m.pop_mark()
    m.set_items(m.top(dict), items)


def _dict(m: _Machine) -> None:
    d: dict = {}
    m.set_items(d, m.pop_mark())
    m.push(d)


def _stack_global(m: _Machine) -> None:
    name, module = m.pop(), m.pop()
    m.push(m.find_global(module, name))


def _binpersid(m: _Machine) -> None:
    m.push(m.persistent_load(m.pop()))


def _dup(m: _Machine) -> None:
    x = m.pop()
    m.push(x)
    m.push(x)


_OPS: dict[int, Callable[[_Machine], None]] = {
    0x80: _proto,
    0x95: lambda m: m.read(8),                                             # FRAME
    ord("("): lambda m: m.marks.append(len(m.stack)),                      # MARK
    ord("0"): _pop,
    ord("1"): lambda m: m.pop_mark(),                                      # POP_MARK
    ord("2"): _dup,
    ord("N"): lambda m: m.push(None),
    0x88: lambda m: m.push(True),
    0x89: lambda m: m.push(False),
    ord("J"): lambda m: m.push(m.unpack("<i")),                            # BININT
    ord("K"): lambda m: m.push(m.read(1)[0]),                              # BININT1
    ord("M"): lambda m: m.push(m.unpack("<H")),                            # BININT2
    0x8A: lambda m: _long(m, m.read(1)[0]),                                # LONG1
    0x8B: lambda m: _long(m, m.unpack("<i")),                              # LONG4
    ord("G"): lambda m: m.push(m.unpack(">d")),                            # BINFLOAT
    ord("X"): lambda m: m.push(m.text(m.read(m.unpack("<I")))),            # BINUNICODE
    0x8C: lambda m: m.push(m.text(m.read(m.read(1)[0]))),                  # SHORT_BINUNICODE
    0x8D: lambda m: m.push(m.text(m.read(m.unpack("<Q")))),                # BINUNICODE8
    ord(")"): lambda m: m.push(()),
    ord("t"): lambda m: m.push(tuple(m.pop_mark())),
    0x85: lambda m: m.push((m.pop(),)),
    0x86: lambda m: m.push(tuple(reversed((m.pop(), m.pop())))),
    0x87: lambda m: m.push(tuple(reversed((m.pop(), m.pop(), m.pop())))),
    ord("]"): lambda m: m.push([]),
    ord("l"): lambda m: m.push(m.pop_mark()),                              # LIST
    ord("a"): _append,
    ord("e"): _appends,
    ord("}"): lambda m: m.push({}),
    ord("d"): _dict,
    ord("s"): _setitem,
    ord("u"): _setitems,
    ord("q"): lambda m: m.memo_put(m.read(1)[0]),                          # BINPUT
    ord("r"): lambda m: m.memo_put(m.unpack("<I")),                        # LONG_BINPUT
    0x94: lambda m: m.memo_put(len(m.memo)),                               # MEMOIZE
    ord("h"): lambda m: m.memo_get(m.read(1)[0]),                          # BINGET
    ord("j"): lambda m: m.memo_get(m.unpack("<I")),                        # LONG_BINGET
    ord("c"): lambda m: m.push(m.find_global(m.readline(), m.readline())),  # GLOBAL
    0x93: _stack_global,
    ord("R"): lambda m: m.reduce(),
    ord("Q"): _binpersid,
    ord("b"): lambda m: m.build(),
}


def run_pickle(data: bytes, persistent_load: Callable[[Any], StorageRef]) -> Any:
    """Run the restricted machine over `data`; `persistent_load(pid)` resolves storage ids.

    Raises UnsafeCheckpointError for a global or a call outside the allow-list and
    CorruptCheckpointError for any malformed stream.
    """
    return _Machine(data, persistent_load).run()
