"""Recognizing a known dataset's files by their SHA-256, wherever they come from (a download, --data-dir,
$XPCNN_DATA, the system's folder): MNIST's files passed as Fashion-MNIST's are refused, a user's own files
are used with a one-line warning.

Hashing is not cached: SHA-256 reads about 1.5 GB/s, so the largest file (Fashion-MNIST's 26 MB
train-images, or 47 MB uncompressed) takes 15-40 ms, about a tenth of the time reading it takes.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from xpcnn.errors import DataError, DataWarning


class _Info(Protocol):
    name: str
    sha256: dict[str, str]
    raw_sha256: dict[str, str]
    bundled: Path | None


def sha256(path: Path) -> str:
    """The SHA-256 of file ``path`` as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def known_files(infos: Iterable[_Info]) -> dict[str, tuple[str, str, str | None]]:
    """``{sha256: (dataset, part, file name)}`` of every published file (gzip-compressed and raw) of the datasets
    that are not bundled (a bundled sample's files are its full dataset's); the file name is the dataset's own
    for the part (``info.files``: CIFAR's archive), else None."""
    known = {}
    for info in infos:
        if info.bundled is None:
            names = getattr(info, "files", {})
            for table in (info.sha256, info.raw_sha256):
                known.update({digest: (info.name, part, names.get(part)) for part, digest in table.items()})
    return known


def check_file(path: Path, info: _Info, part: str, known: dict[str, tuple[str, str, str | None]],
               filenames: dict[str, str]) -> None:
    """Check that ``path`` is dataset ``info``'s file ``part`` (``"train_images"``, ...) by its SHA-256.

    Raises :class:`DataError` naming the file when it is another known file: another dataset's (MNIST's
    files given as Fashion-MNIST's) or another part of this one (test images named as training images).
    Warns (:class:`DataWarning`, one line naming the file) when the hash is unknown: a user's own IDX files
    are welcome, but are not the published dataset. ``filenames`` maps parts to file names, for messages.
    """
    digest = sha256(path)
    if digest in (info.sha256.get(part), info.raw_sha256.get(part)):
        return
    if digest in known:
        dataset, other, name = known[digest]
        if dataset != info.name:
            raise DataError(f"{path} is {dataset}'s {name or filenames[other]} (by its SHA-256), not {info.name}'s: "
                            f"pass --dataset {dataset}, or point --data-dir at {info.name}'s files")
        raise DataError(f"{path} is {info.name}'s {filenames[other]} (by its SHA-256), not its {filenames[part]}: "
                        "the files are misnamed; give each file its own name")
    warnings.warn(f"{path} is not {info.name}'s published {filenames[part]} (its SHA-256 {digest[:16]}... is "
                  "unknown); using it as it is", DataWarning, stacklevel=2)
