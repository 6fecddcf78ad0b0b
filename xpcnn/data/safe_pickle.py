"""Reading pickled data (CIFAR's python batches) without running code from the file.

A pickle is a small program: ``pickle.load`` imports and calls whatever globals it names, so loading a file
from the internet can run anything. :func:`loads` runs the pickle with an unpickler whose ``find_class``
resolves no real global at all: the only names it accepts are those NumPy writes for an array (``_reconstruct``,
``ndarray``, ``dtype``, protocol 5's ``_frombuffer``, and ``_codecs.encode``, with which Python 3 writes bytes
at protocol 2), each mapped to a stand-in of xpcnn's own that records the array's shape, dtype and raw bytes
and checks them (integer dtypes only, the byte count the shape promises). The arrays are then made by
:func:`xpcnn.backend.host.from_bytes` from the bytes alone, so no NumPy code runs on anything the file says.
Everything else (another global, a persistent id) is refused before it is called.

What it returns is made of dicts, lists, tuples, bytes, str, ints, floats, bools, None and integer arrays.
Python 2's byte strings (CIFAR's keys and names) come back as bytes (``encoding="bytes"``).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from xpcnn.backend import host
from xpcnn.errors import DataError

#: The element types an array may have: integers of 1 to 8 bytes (CIFAR's pixels are ``u1``).
_ITEMSIZE = {"u1": 1, "i1": 1, "u2": 2, "i2": 2, "u4": 4, "i4": 4, "u8": 8, "i8": 8, "b1": 1}


class _Refused(Exception):
    """The pickle names something :func:`loads` does not run; the argument says what."""


def _text(value: Any) -> str:
    """A pickle's string as str (Python 2's byte strings arrive as bytes)."""
    if isinstance(value, bytes):
        return value.decode("latin1")
    if isinstance(value, str):
        return value
    raise _Refused(f"a {type(value).__name__} where a string belongs")


class _NDArrayType:
    """Stands for ``numpy.ndarray`` (the class argument of ``_reconstruct``); never instantiated by a pickle."""


_NDARRAY = _NDArrayType()


class _Dtype:
    """Stands for ``numpy.dtype(spec, align, copy)`` and its ``__setstate__`` (byte order); integer types only."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        spec = _text(spec)
        kind = spec.lstrip("<>|=")
        if kind not in _ITEMSIZE:
            raise _Refused(f"an array of dtype {spec!r} (only integer arrays are read)")
        self.kind, self.order = kind, spec[0] if spec[0] in "<>|=" else "|"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2:
            raise _Refused("a dtype state that is not a tuple")
        self.order = _text(state[1])
        if self.order not in ("<", ">", "|", "="):
            raise _Refused(f"a dtype with byte order {self.order!r}")

    @property
    def descr(self) -> str:
        """``"u1"``, ``"<i8"``, ...: the dtype as :func:`~xpcnn.backend.host.from_bytes` takes it."""
        if _ITEMSIZE[self.kind] == 1:
            return self.kind
        return (">" if self.order == ">" else "<") + self.kind


def _array(raw: Any, dtype: Any, shape: Any, fortran: bool) -> host.ndarray:
    """The array of ``shape`` and ``dtype`` in ``raw``, after checking each; refused otherwise."""
    if not isinstance(dtype, _Dtype):
        raise _Refused("an array without an integer dtype")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                               for d in shape):
        raise _Refused(f"an array of shape {shape!r}")
    if isinstance(raw, str):
        raw = raw.encode("latin1")  # Python 2's str read with another encoding
    if isinstance(raw, (bytearray, memoryview, pickle.PickleBuffer)):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        raise _Refused(f"array data of type {type(raw).__name__}")
    count = 1
    for d in shape:
        count *= d
    if len(raw) != count * _ITEMSIZE[dtype.kind]:
        raise _Refused(f"an array of shape {shape} whose data holds {len(raw)} bytes, not "
                       f"{count * _ITEMSIZE[dtype.kind]}")
    xp = host.xp
    if fortran and len(shape) > 1:
        return xp.permute_dims(host.from_bytes(raw, dtype.descr, shape[::-1]), tuple(range(len(shape)))[::-1])
    return host.from_bytes(raw, dtype.descr, shape)


class _ArrayState:
    """Stands for ``numpy.core.multiarray._reconstruct(ndarray, (0,), b"b")``; ``__setstate__`` gets the array's
    ``(version, shape, dtype, is_fortran, raw bytes)``."""

    def __init__(self, cls: Any, shape: Any = (0,), typecode: Any = b"b") -> None:
        if cls is not _NDARRAY:
            raise _Refused("_reconstruct of something other than numpy.ndarray")
        self.array: host.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("an array state that is not a (version, shape, dtype, fortran, data) tuple")
        shape, dtype, fortran, raw = state[-4:]
        self.array = _array(raw, dtype, shape, bool(fortran))


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> host.ndarray:
    """Stands for NumPy's protocol-5 ``_frombuffer(buffer, dtype, shape, order)``."""
    return _array(buffer, dtype, shape, _text(order) == "F")


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Stands for ``_codecs.encode(text, "latin1")``, with which Python 3 pickles bytes at protocol 2."""
    if not isinstance(text, str) or _text(encoding).lower().replace("-", "") != "latin1":
        raise _Refused("_codecs.encode other than of a str to latin1")
    return text.encode("latin1")


_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _ArrayState,
    ("numpy._core.multiarray", "_reconstruct"): _ArrayState,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Dtype,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _encode,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"the global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")


def _resolved(value: Any) -> Any:
    """``value`` with each array stand-in replaced by its array; a stray stand-in is refused."""
    if isinstance(value, dict):
        return {_resolved(k): _resolved(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolved(v) for v in value)
    if isinstance(value, _ArrayState):
        if value.array is None:
            raise _Refused("an array without data")
        return value.array
    if isinstance(value, (_Dtype, _NDArrayType)) or callable(value):
        raise _Refused(f"a bare {type(value).__name__}")
    return value


def loads(data: bytes, where: str) -> Any:
    """The value pickled in ``data`` (see the module docstring for what may be in it), read without running
    code from it.

    Raises :class:`DataError` starting with ``where`` (the file, for the message): for anything the pickle
    asks for besides plain values and integer arrays ("refused to read it"), and for a damaged pickle.
    """
    try:
        return _resolved(_Unpickler(io.BytesIO(data), encoding="bytes").load())
    except _Refused as exc:
        raise DataError(f"{where}: refused to read it: the pickle asks for {exc}, which a dataset's batch never "
                        "holds (xpcnn runs no code from data files); the file is not the dataset's") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, RecursionError, MemoryError) as exc:
        raise DataError(f"{where}: not a readable pickle ({type(exc).__name__}: {str(exc)[:100]}); the file is "
                        "damaged or truncated: delete it and download it again") from None
