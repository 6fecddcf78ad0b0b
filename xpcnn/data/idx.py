"""Reading and writing IDX files (the MNIST format), raw or gzip-compressed, with strict validation."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

from xpcnn.backend import host
from xpcnn.errors import DataError

_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SIZES = {"u1": 1, "i1": 1, ">i2": 2, ">i4": 4, ">f4": 4, ">f8": 8}
#: The IDX type codes by name, for messages: ``float32 (0x0D)``.
_TYPE_NAMES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
_INTEGER_TYPES = (0x08, 0x09, 0x0B, 0x0C)


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: the gzip stream is corrupt or truncated ({exc}); "
                        "delete the file and download it again") from None


def read_idx(path: str | os.PathLike, expect_ndim: int | None = None) -> host.ndarray:
    """The array stored in IDX file ``path`` (e.g. images ``(N, 28, 28)`` uint8, labels ``(N,)`` uint8), of
    whatever element type its header declares; :func:`read_images` and :func:`read_labels` check it.

    Raises :class:`DataError` for a missing file, a bad magic number, an unexpected rank,
    or a payload shorter or longer than its header says.
    """
    return _read(Path(path), expect_ndim)[0]


def read_images(path: str | os.PathLike) -> host.ndarray:
    """Images ``(N, H, W)`` or ``(N, C, H, W)`` uint8 from IDX file ``path``.

    Raises :class:`DataError` naming the file for anything :func:`read_idx` refuses, an element type other
    than unsigned bytes (IDX type 0x08: int32 or float pixels would train to NaN), another rank, or no images.
    """
    path = Path(path)
    images, code = _read(path, None)
    if images.ndim not in (3, 4):
        raise DataError(f"{path}: images must be a 3-D (N, H, W) or 4-D (N, C, H, W) IDX array, the header says "
                        f"{images.ndim}-D {tuple(images.shape)}; is this a labels file?")
    if code != 0x08:
        raise DataError(f"{path}: images must be unsigned bytes (IDX type 0x08), found {_TYPE_NAMES[code]} "
                        f"(0x{code:02X}); convert the pixels to uint8 0-255 and write the file again")
    if images.shape[0] == 0 or any(d == 0 for d in images.shape[1:]):
        raise DataError(f"{path}: holds no images (shape {tuple(images.shape)}); the file is empty or damaged")
    return images


def read_labels(path: str | os.PathLike) -> host.ndarray:
    """Labels ``(N,)`` int64 from IDX file ``path``.

    Raises :class:`DataError` naming the file for anything :func:`read_idx` refuses, a rank other than 1, a
    non-integer element type (float labels would be truncated), a negative label, or no labels.
    """
    path = Path(path)
    labels, code = _read(path, None)
    if labels.ndim != 1:
        raise DataError(f"{path}: labels must be a 1-D IDX array, the header says {labels.ndim}-D "
                        f"{tuple(labels.shape)}; is this an images file?")
    if code not in _INTEGER_TYPES:
        raise DataError(f"{path}: labels must be integers, best unsigned bytes (IDX type 0x08), found "
                        f"{_TYPE_NAMES[code]} (0x{code:02X}); write the class indices as uint8")
    if labels.shape[0] == 0:
        raise DataError(f"{path}: holds no labels; the file is empty or damaged")
    xp = host.xp
    labels = xp.astype(labels, xp.int64)
    if code != 0x08 and bool(xp.any(labels < 0)):
        index = int(xp.argmax(xp.astype(labels < 0, xp.int8)))
        raise DataError(f"{path}: label {int(labels[index])} at index {index} is negative; labels are class "
                        "indices 0, 1, 2, ...")
    return labels


def _read(path: Path, expect_ndim: int | None) -> tuple[host.ndarray, int]:
    """The array in IDX file ``path`` and its IDX type code (0x08 for unsigned bytes, ...)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'}); "
                        "expected 0000 08xx for unsigned bytes")
    dtype, ndim = _DTYPES[data[2]], data[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(f"{path}: expected a {expect_ndim}-D IDX array, the header says {ndim}-D")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header ({len(data)} bytes; a {ndim}-D IDX header takes {header}); "
                        "the file is truncated or corrupt")
    shape = tuple(int(d) for d in host.from_bytes(data, ">u4", (ndim,), offset=4))
    expected = _SIZES[dtype]
    for d in shape:
        expected *= d
    if len(data) - header != expected:
        raise DataError(f"{path}: header promises {shape} = {expected} bytes of data, "
                        f"the file holds {len(data) - header}; the file is truncated or corrupt")
    return host.from_bytes(data, dtype, shape, offset=header), data[2]


def write_idx(path: str | os.PathLike, array: host.ndarray, compress: bool | None = None,
              dtype: str = "uint8") -> None:
    """Write ``array`` as an IDX file of element type ``dtype`` (``"uint8"``, the type of MNIST's files, or
    ``"int8"``, ``"int16"``, ``"int32"``, ``"float32"``, ``"float64"``), gzip-compressed when the name ends in
    ``.gz`` (or as ``compress`` says). Raises ValueError for another ``dtype``."""
    codes = {name: code for code, name in _TYPE_NAMES.items()}
    if dtype not in codes:
        raise ValueError(f"IDX files hold {', '.join(codes)}, not {dtype!r}")
    path = Path(path)
    code = codes[dtype]
    header = bytes([0, 0, code, len(array.shape)]) + host.to_bytes(host.xp.asarray(array.shape), ">u4")
    payload = header + host.to_bytes(array, _DTYPES[code])
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
