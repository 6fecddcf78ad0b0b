"""MNIST-style datasets: where to find their four IDX files, and how to download them safely."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from xpcnn.backend import host
from xpcnn.data.idx import read_idx
from xpcnn.errors import DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's download mirrors, file checksums, class names and normalization constants."""

    name: str
    mirrors: tuple[str, ...]
    sha256: dict[str, str]
    classes: tuple[str, ...]
    mean: float
    std: float


DATASETS = {
    "mnist": DatasetInfo(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        {"train_images": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
         "train_labels": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
         "test_images": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
         "test_labels": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
        tuple(str(d) for d in range(10)), 0.1307, 0.3081),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {"train_images": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
         "train_labels": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
         "test_images": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
         "test_labels": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"},
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        0.2860, 0.3530),
}


@dataclass
class Split:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64, on the host."""

    images: host.ndarray
    labels: host.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, start: int, stop: int | None = None) -> Split:
        return Split(self.images[start:stop], self.labels[start:stop])


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for ``name``'s files, in order: --data-dir, $XPCNN_DATA, the user cache, Debian's."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / name]
    if os.environ.get("XPCNN_DATA"):
        dirs += [Path(os.environ["XPCNN_DATA"]) / name, Path(os.environ["XPCNN_DATA"])]
    dirs += [cache_dir(name), Path("/usr/share/datasets") / name]
    return dirs


def cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/xpcnn/<name>`` (``~/.cache/xpcnn/<name>`` by default)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "xpcnn" / name


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / (stem + ".gz"), folder / stem):
        if candidate.is_file():
            return candidate
    return None


def locate(name: str, data_dir: str | os.PathLike | None = None, parts: tuple[str, ...] = tuple(FILES),
           download: bool = True) -> dict[str, Path]:
    """Paths of ``parts`` of dataset ``name``: the first folder holding all of them, else a download.

    Raises :class:`DataError` naming every folder searched and how to supply the files.
    """
    info = dataset_info(name)
    for folder in search_dirs(name, data_dir):
        found = {part: _find(folder, FILES[part]) for part in parts}
        if all(found.values()):
            return found  # type: ignore[return-value]
    if data_dir is not None:
        download = False  # an explicit folder is a promise that the files are there
    errors = []
    if download:
        try:
            return {part: fetch(info, part) for part in parts}
        except DataError as exc:
            errors.append(str(exc))
    searched = ", ".join(str(d) for d in search_dirs(name, data_dir))
    wanted = ", ".join(FILES[p] + "[.gz]" for p in parts)
    hint = " (or: apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else ""
    raise DataError(f"dataset {name!r} not found: looked for {wanted} in {searched}; "
                    + (f"download failed: {errors[0]}; " if errors else "")
                    + f"put the four IDX files in a folder and pass --data-dir DIR, or set XPCNN_DATA{hint}")


def fetch(info: DatasetInfo, part: str) -> Path:
    """Download one file into the user cache with SHA-256 verification (pooch writes atomically)."""
    import pooch
    pooch.get_logger().setLevel("WARNING")  # the progress bar says what is downloading; errors say the rest
    folder = cache_dir(info.name)
    filename = FILES[part] + ".gz"
    mirrors = os.environ.get("XPCNN_MIRROR", "").split() or list(info.mirrors)
    last_error: Exception | None = None
    for mirror in mirrors:
        try:
            path = pooch.retrieve(mirror.rstrip("/") + "/" + filename, known_hash=f"sha256:{info.sha256[part]}",
                                  fname=filename, path=folder, progressbar=True)
            return Path(path)
        except ValueError as exc:  # pooch's hash mismatch: the download is deleted, never kept
            raise DataError(f"{filename} from {mirror} failed its SHA-256 check ({exc})") from None
        except Exception as exc:  # network errors differ by transport; try the next mirror
            last_error = exc
    raise DataError(f"could not download {filename} from {', '.join(mirrors)} ({type(last_error).__name__}: "
                    f"{last_error})")


def load(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> tuple[Split, Split]:
    """``(train, test)`` splits of dataset ``name``, found or downloaded as :func:`locate` says."""
    paths = locate(name, data_dir, download=download)
    return (_split(paths["train_images"], paths["train_labels"]),
            _split(paths["test_images"], paths["test_labels"]))


def load_test_only(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Split:
    """Only the test split (for folders such as the shared MNIST test set)."""
    paths = locate(name, data_dir, parts=("test_images", "test_labels"), download=download)
    return _split(paths["test_images"], paths["test_labels"])


def _split(images_path: Path, labels_path: Path) -> Split:
    images = read_idx(images_path, expect_ndim=3)
    labels = read_idx(labels_path, expect_ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path.name} holds {images.shape[0]} images but {labels_path.name} holds "
                        f"{labels.shape[0]} labels; the files do not belong together")
    return Split(images, host.xp.astype(labels, host.xp.int64))
