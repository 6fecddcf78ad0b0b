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
    """The array stored in IDX file ``path`` (e.g. images ``(N, 28, 28)`` uint8, labels ``(N,)`` uint8).

    Raises :class:`DataError` for a missing file, a bad magic number, an unexpected rank,
    or a payload shorter or longer than its header says.
    """
    path = Path(path)
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
        raise DataError(f"{path}: truncated header")
    shape = tuple(int(d) for d in host.from_bytes(data, ">u4", (ndim,), offset=4))
    expected = _SIZES[dtype]
    for d in shape:
        expected *= d
    if len(data) - header != expected:
        raise DataError(f"{path}: header promises {shape} = {expected} bytes of data, "
                        f"the file holds {len(data) - header}; the file is truncated or corrupt")
    return host.from_bytes(data, dtype, shape, offset=header)


def write_idx(path: str | os.PathLike, array: host.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 ``array`` as an IDX file (gzip when the name ends in ``.gz``)."""
    path = Path(path)
    header = bytes([0, 0, 0x08, len(array.shape)]) + host.to_bytes(host.xp.asarray(array.shape), ">u4")
    payload = header + host.to_bytes(array, "u1")
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
