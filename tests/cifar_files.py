"""Writing small CIFAR-10/100 archives in the official python-version format, for tests (no network).

The official batches were pickled by Python 2 (protocol 2): every str (dict keys, class names, the dtype's
``"u1"``) and the pixel bytes are byte strings (opcodes ``U``/``T``), the array is
``numpy.core.multiarray._reconstruct``'d. :func:`py2_pickle` writes the same opcodes from Python 3.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table can be changed
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_string(self, data: bytes) -> None:
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(data)

    def save_bytes(self, obj: bytes) -> None:
        self._save_string(obj)

    def save_str(self, obj: str) -> None:
        self._save_string(obj.encode("latin1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def py2_pickle(value: object) -> bytes:
    """``value`` pickled as Python 2's cPickle did at protocol 2 (str as byte strings, ``numpy.core``)."""
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(value)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def batch(images: np.ndarray, labels: list[int], labels_key: str = "labels", extra: dict | None = None) -> bytes:
    """A data batch: ``{b"batch_label", b"labels", b"data", b"filenames"}`` as the official files hold them."""
    n = images.shape[0]
    value = {b"batch_label": b"training batch 1 of 5", labels_key.encode(): list(labels),
             b"data": np.ascontiguousarray(images.reshape(n, 3072), dtype=np.uint8),
             b"filenames": [f"image_{i}.png".encode() for i in range(n)], **(extra or {})}
    return py2_pickle(value)


def random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def cifar10_members(per_batch: int = 4, test: int = 6, seed: int = 0) -> tuple[dict[str, bytes], dict]:
    """The members of a small cifar-10-python.tar.gz and the arrays they hold (``train``/``test`` images and
    labels, concatenated in batch order)."""
    members, train_images, train_labels = {}, [], []
    for i in range(1, 6):
        images = random_images(per_batch, seed + i)
        labels = [(i + j) % 10 for j in range(per_batch)]
        members[f"cifar-10-batches-py/data_batch_{i}"] = batch(images, labels)
        train_images.append(images)
        train_labels += labels
    test_images = random_images(test, seed + 9)
    test_labels = [j % 10 for j in range(test)]
    members["cifar-10-batches-py/test_batch"] = batch(test_images, test_labels)
    members["cifar-10-batches-py/batches.meta"] = py2_pickle(
        {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072})
    members["cifar-10-batches-py/readme.html"] = b"<html></html>"
    arrays = {"train_images": np.concatenate(train_images), "train_labels": np.asarray(train_labels),
              "test_images": test_images, "test_labels": np.asarray(test_labels)}
    return members, arrays


def write_cifar10(folder: Path, **kwargs: int) -> tuple[Path, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    members, arrays = cifar10_members(**kwargs)
    return write_tar(folder / "cifar-10-python.tar.gz", members), arrays


def write_cifar100(folder: Path, train: int = 8, test: int = 5, seed: int = 0) -> tuple[Path, dict]:
    from xpcnn.data.datasets import DATASETS
    fine = list(DATASETS["cifar100"].classes)
    folder.mkdir(parents=True, exist_ok=True)
    train_images, test_images = random_images(train, seed), random_images(test, seed + 1)
    train_labels, test_labels = [(7 * j) % 100 for j in range(train)], [(13 * j + 99) % 100 for j in range(test)]
    members = {
        "cifar-100-python/train": batch(train_images, train_labels, "fine_labels",
                                        {b"coarse_labels": [j % 20 for j in range(train)]}),
        "cifar-100-python/test": batch(test_images, test_labels, "fine_labels",
                                       {b"coarse_labels": [j % 20 for j in range(test)]}),
        "cifar-100-python/meta": py2_pickle({b"fine_label_names": [n.encode() for n in fine],
                                             b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}),
        "cifar-100-python/file.txt~": b"",
    }
    arrays = {"train_images": train_images, "train_labels": np.asarray(train_labels), "test_images": test_images,
              "test_labels": np.asarray(test_labels)}
    return write_tar(folder / "cifar-100-python.tar.gz", members), arrays
