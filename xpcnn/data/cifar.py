"""CIFAR-10 and CIFAR-100 from their official python-version archives (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz`` from https://www.cs.toronto.edu/~kriz/cifar.html).

An archive holds one folder (``cifar-10-batches-py``: ``data_batch_1`` ... ``data_batch_5``, ``test_batch``,
``batches.meta``; ``cifar-100-python``: ``train``, ``test``, ``meta``) of pickled Python 2 dicts: a batch maps
``data`` to a uint8 array ``(N, 3072)`` (each row the 1024 red, then green, then blue pixels of a 32x32 image,
row by row) and ``labels`` (CIFAR-100: ``fine_labels`` and ``coarse_labels``) to a list of ints; the meta file
maps ``label_names`` (CIFAR-100: ``fine_label_names``) to the class names. The batches are read straight from
the archive (nothing is extracted to disk) with :func:`xpcnn.data.safe_pickle.loads`, which runs no code from
the file: it accepts nothing but plain values and integer arrays, and builds the arrays itself from their bytes.

The archive is found in a dataset folder (``--data-dir``, ``$XPCNN_DATA``, the user cache), or downloaded into
the cache with its SHA-256 checked, as MNIST's files are (:func:`xpcnn.data.datasets.fetch`). A folder may also
hold the archive's extracted folder (as torchvision leaves it), or be that folder; extracted files have no
published checksums, so they are read (and checked for shape and labels) without one.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from xpcnn.backend import host
from xpcnn.data import checksums, datasets, safe_pickle
from xpcnn.data.datasets import DatasetInfo, DatasetNotFound, Split
from xpcnn.errors import DataError

#: The largest member read from an archive (CIFAR-100's ``train`` is 155 MB).
MAX_MEMBER_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Layout:
    """Where an archive keeps a dataset's batches, and the keys of its dicts."""

    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    labels_key: str
    names_key: str


LAYOUTS = {
    "cifar10": Layout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                      "batches.meta", "labels", "label_names"),
    "cifar100": Layout("cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names"),
}


def find_source(info: DatasetInfo, folders: list[Path]) -> Path | None:
    """The first of, in each of ``folders`` in turn: the archive (``folder/cifar-10-python.tar.gz``), its extracted
    folder (``folder/cifar-10-batches-py``), or ``folder`` itself when it holds the extracted files; else None."""
    layout = LAYOUTS[info.name]
    for folder in folders:
        archive = folder / info.files["archive"]
        if archive.is_file():
            return archive
        for candidate in (folder / layout.folder, folder):
            if all((candidate / member).is_file() for member in (*layout.train, *layout.test, layout.meta)):
                return candidate
    return None


def locate(info: DatasetInfo, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The archive (or extracted folder, see :func:`find_source`) of ``info``'s dataset: in ``data_dir`` (or
    ``data_dir/<name>``) when given, else in the first folder of :func:`~xpcnn.data.datasets.search_dirs` holding
    it, else downloaded into the user cache. An archive is recognized by its SHA-256 (an unknown one is used with
    a one-line :class:`~xpcnn.errors.DataWarning`; another dataset's is refused).

    Raises :class:`~xpcnn.data.datasets.DatasetNotFound` in one line, as for MNIST: the folders searched, why
    the download failed, how to supply the archive and what this machine has instead.
    """
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DatasetNotFound(_not_found(info, data_dir, None))
    found = find_source(info, datasets.search_dirs(info.name, data_dir))
    if found is None:
        download_error = None
        if download and data_dir is None:
            try:
                found = datasets.fetch(info, "archive")
            except DataError as exc:
                download_error = exc
        if found is None:
            raise DatasetNotFound(_not_found(info, data_dir, download_error), download_error)
    if found.is_file():
        known = checksums.known_files(datasets.DATASETS.values())
        checksums.check_file(found, info, "archive", known, {**datasets.FILES, **info.files})
    return found


def _not_found(info: DatasetInfo, data_dir: str | os.PathLike | None, download_error: DataError | None) -> str:
    layout = LAYOUTS[info.name]
    return datasets._not_found(info.name, data_dir, (), download_error,
                               wanted=f"{info.files['archive']} or its folder {layout.folder}",
                               supply=f"put {info.files['archive']} (from {info.mirrors[0]}) in a folder")


def load(info: DatasetInfo, data_dir: str | os.PathLike | None = None, download: bool = True,
         train: bool = True) -> tuple[Split | None, Split]:
    """``(train, test)`` of CIFAR dataset ``info`` (:data:`~xpcnn.data.datasets.DATASETS` ``["cifar10"]`` or
    ``["cifar100"]``), found or downloaded as :func:`locate` says: images ``(N, 3, 32, 32)`` uint8 (50,000 to
    train, 10,000 to test), labels ``(N,)`` int64 (CIFAR-100: the 100 fine labels), and the class names of the
    meta file in each split's ``classes``. ``train=False`` reads the test batch only (train is None then).

    Raises :class:`DataError` in one line naming the archive and member: a missing or oversized member, a
    pickle that asks for code or is damaged (:func:`~xpcnn.data.safe_pickle.loads`), a batch without its
    ``data`` or labels, pixels that are not uint8 rows of 3072, labels that are not ints of the dataset's
    classes or not one per image, a meta file without its class names or with another number of them.
    """
    source = locate(info, data_dir, download)
    layout = LAYOUTS[info.name]
    with _Members(source, layout) as members:
        classes = _classes(members, layout, info)
        test = _split(members, layout.test, layout, info, classes)
        training = _split(members, layout.train, layout, info, classes) if train else None
    return training, test


class _Members:
    """The members of an archive or of an extracted folder. An archive is read in one pass, in its own order
    (a ``.tar.gz`` cannot seek back without decompressing again from its start), keeping only the layout's
    members, in memory: nothing is extracted to disk."""

    def __init__(self, source: Path, layout: Layout) -> None:
        self.source, self.layout = source, layout
        self.archive = source.is_file()
        self.blobs: dict[str, bytes] = {}

    def __enter__(self) -> _Members:
        if self.archive:
            wanted = {*self.layout.train, *self.layout.test, self.layout.meta}
            try:
                with tarfile.open(self.source, "r|*") as tar:
                    for entry in tar:
                        parts = Path(entry.name).parts
                        parts = parts[1:] if parts[:1] == (".",) else parts
                        if len(parts) != 2 or parts[0] != self.layout.folder or parts[1] not in wanted:
                            continue
                        if not entry.isfile() or entry.size > MAX_MEMBER_BYTES:
                            what = f"{entry.size:,} bytes" if entry.isfile() else "not a regular file"
                            raise DataError(f"{self.where(parts[1])}: {what}, not a CIFAR batch; the archive is "
                                            "not the dataset's")
                        handle = tar.extractfile(entry)
                        self.blobs[parts[1]] = handle.read() if handle is not None else b""
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise DataError(f"{self.source}: not a readable tar.gz archive ({exc}); the file is damaged: delete "
                                "it and download it again") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.blobs.clear()

    def where(self, member: str) -> str:
        """The member's name for messages: ``archive.tar.gz:cifar-10-batches-py/test_batch`` or its path."""
        if not self.archive:
            return str(self.source / member)
        return f"{self.source}:{self.layout.folder}/{member}"

    def read(self, member: str) -> bytes:
        if self.archive:
            if member not in self.blobs:
                raise DataError(f"{self.source} lacks {self.layout.folder}/{member}; the archive is damaged or "
                                "incomplete: delete it and download it again")
            return self.blobs.pop(member)  # read once: its memory goes with the batch
        path = self.source / member
        if not path.is_file():
            raise DataError(f"{path}: no such file; the folder lacks part of {self.layout.folder}")
        if path.stat().st_size > MAX_MEMBER_BYTES:
            raise DataError(f"{path}: {path.stat().st_size:,} bytes, more than a CIFAR batch holds; the file is "
                            "not the dataset's")
        return path.read_bytes()


def _dict(members: _Members, member: str) -> dict[str, object]:
    """The pickled dict in ``member``, with its (Python 2 byte string) keys as str."""
    value = safe_pickle.loads(members.read(member), members.where(member))
    if not isinstance(value, dict):
        raise DataError(f"{members.where(member)}: holds a {type(value).__name__}, not a CIFAR batch's dict")
    return {key.decode("latin1") if isinstance(key, bytes) else str(key): item for key, item in value.items()}


def _classes(members: _Members, layout: Layout, info: DatasetInfo) -> tuple[str, ...]:
    meta = _dict(members, layout.meta)
    names = meta.get(layout.names_key)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{members.where(layout.meta)}: no list of class names under {layout.names_key!r} "
                        f"(its keys: {', '.join(meta) or 'none'}); the file is not {info.name}'s meta file")
    if len(names) != len(info.classes):
        raise DataError(f"{members.where(layout.meta)}: names {len(names)} classes, {info.name} has "
                        f"{len(info.classes)}; the archive is not {info.name}'s")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)


def _split(members: _Members, names: tuple[str, ...], layout: Layout, info: DatasetInfo,
           classes: tuple[str, ...]) -> Split:
    xp = host.xp
    images, labels = [], []
    for member in names:
        batch_images, batch_labels = _batch(members, member, layout, len(classes))
        images.append(batch_images)
        labels.append(batch_labels)
    files = (members.source,)
    joined = images[0] if len(images) == 1 else xp.concat(images)
    return Split(joined, labels[0] if len(labels) == 1 else xp.concat(labels), info.name, files, classes)


def _batch(members: _Members, member: str, layout: Layout, num_classes: int) -> tuple[host.ndarray, host.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one batch, checked (see :func:`load`)."""
    xp = host.xp
    where = members.where(member)
    batch = _dict(members, member)
    data, labels = batch.get("data"), batch.get(layout.labels_key)
    if data is None or labels is None:
        missing = " and ".join(repr(k) for k, v in (("data", data), (layout.labels_key, labels)) if v is None)
        raise DataError(f"{where}: no {missing} in the batch (its keys: {', '.join(batch) or 'none'}); the file is "
                        "not a CIFAR batch")
    if not isinstance(data, host.ndarray) or data.dtype != xp.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or data.shape[0] == 0:
        shape = tuple(getattr(data, "shape", ())) or type(data).__name__
        raise DataError(f"{where}: 'data' must be uint8 rows of 3072 pixels (N, 3072), found "
                        f"{getattr(data, 'dtype', '')} {shape}; the file is not a CIFAR batch")
    if isinstance(labels, host.ndarray):
        labels = [int(v) for v in labels.reshape(-1)] if labels.ndim == 1 else None
    if not isinstance(labels, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise DataError(f"{where}: {layout.labels_key!r} must be a list of ints; the file is not a CIFAR batch")
    if len(labels) != data.shape[0]:
        raise DataError(f"{where}: {data.shape[0]} images but {len(labels)} labels; the file is damaged")
    bad = next((i for i, v in enumerate(labels) if not 0 <= v < num_classes), None)
    if bad is not None:
        raise DataError(f"{where}: label {labels[bad]} at index {bad} is no class (0 to {num_classes - 1}); the "
                        "file is damaged or belongs to another dataset")
    return xp.reshape(data, (data.shape[0], 3, 32, 32)), xp.asarray(labels, dtype=xp.int64)
