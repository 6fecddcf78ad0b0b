"""Host-memory (NumPy) helpers for the parts of xpcnn that handle files: data, checkpoints, images."""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from xpcnn import strict_json
from xpcnn.resources import exceeds_memory, format_bytes

#: The NumPy Array API namespace, for host-side array work outside the backend package.
from array_api_compat import numpy as xp  # noqa: E402, F401  (re-exported)

ndarray = np.ndarray


def full(shape: tuple[int, ...], value: float, dtype: str = "float32") -> np.ndarray:
    """A host array of ``shape`` filled with ``value``."""
    return np.full(shape, value, dtype=dtype)


def from_bytes(buffer: bytes, dtype: str, shape: tuple[int, ...], offset: int = 0) -> np.ndarray:
    """Read ``shape`` values of ``dtype`` (e.g. ``">i4"``, ``"u1"``) from ``buffer`` at ``offset``."""
    count = int(np.prod(shape)) if shape else 1
    return np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)


def to_bytes(array: np.ndarray, dtype: str) -> bytes:
    """The raw bytes of ``array`` as ``dtype``."""
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def fsync_replace(tmp_path: Path, path: Path) -> None:
    """Make ``tmp_path`` durable, then atomically rename it onto ``path`` (and sync the folder)."""
    with open(tmp_path, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp_path, path)
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``arrays`` and JSON ``meta`` to one ``.npz`` file atomically (temp file, fsync, rename).

    A crash at any moment leaves either the old file or the new one, never a torn one. Raises ValueError
    where ``path`` names something other than a file (a folder, a device: the rename would replace it) and
    OSError naming ``path`` where it cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a regular file (a folder or a device); give a file path such as "
                         f"{path.name or 'model'}.npz in a folder you can write")
    payload = {name: np.asarray(a) for name, a in arrays.items()}
    meta_bytes = np.frombuffer(strict_json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, __meta__=meta_bytes, **payload)
        fsync_replace(Path(tmp), path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_arrays`; never unpickles (``allow_pickle=False``).

    Raises ValueError if the file is not such an archive, holds object arrays, or an array whose header
    declares more data than the file stores (checked before anything is allocated for it).
    """
    data = Path(path).read_bytes()
    if not data.startswith(b"PK\x03\x04"):  # np.load would read anything else as a (refused) pickle
        raise ValueError("not an .npz archive (a checkpoint is a zip file of arrays and a JSON header)")
    try:
        _check_declared_sizes(data)
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"not an xpcnn checkpoint archive ({exc})") from None
    if "__meta__" not in arrays:
        raise ValueError("archive has no xpcnn metadata")
    meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    return arrays, meta


def _check_declared_sizes(data: bytes) -> None:
    """Raise ValueError, naming the array, for an ``.npy`` member of the archive ``data`` whose header declares
    a shape and dtype of another size than the bytes stored after it, or more than this machine's memory.

    ``np.load`` allocates the declared shape before reading a member, so a crafted 64-byte header declaring a
    3.55 PiB tensor would otherwise end in a MemoryError."""
    total = 0
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                total += info.file_size  # np.load would read it whole, as bytes
                continue
            name = info.filename[:-4]
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f"array {name} is in .npy format {version[0]}.{version[1]}, which xpcnn does "
                                     "not read (it writes 1.0)")
                stored = info.file_size - member.tell()
            count = 1
            for d in shape:
                count *= d
            declared = count * dtype.itemsize
            if not dtype.hasobject and declared != stored:
                raise ValueError(f"array {name} declares shape {shape} of {dtype} ({format_bytes(declared)}) but the "
                                 f"file stores {format_bytes(max(stored, 0))} of it; the file is damaged or was "
                                 "crafted")
            total += declared
    memory = exceeds_memory(total)
    if memory is not None:
        raise ValueError(f"its arrays hold {format_bytes(total)}, more than this machine's memory "
                         f"({format_bytes(memory)})")
