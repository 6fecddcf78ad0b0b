"""The datasets xpcnn knows: MNIST-style ones (where to find their four IDX files, how to download them safely,
and the small sample of real MNIST digits that ships inside the package, so that a first run needs no network),
CIFAR-10 and CIFAR-100 (their official archives, read by :mod:`xpcnn.data.cifar`) and ``image-folder`` (a
user's own PNG/JPEG files, :mod:`xpcnn.data.image_folder`)."""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xpcnn.backend import host
from xpcnn.data import checksums
from xpcnn.data.idx import read_images, read_labels
from xpcnn.errors import DataError, ShapeError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
TEST_PARTS = ("test_images", "test_labels")

#: The bundled sample: MNIST's 10,000-image test set (the two t10k files, 1.7 MB), shipped as package data.
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"

#: Debian's dataset packages install here (``apt-get install dataset-fashion-mnist``); ``$XPCNN_SYSTEM_DATA``
#: replaces it (folders separated by ``os.pathsep``; empty: none).
SYSTEM_DATA = "/usr/share/datasets"

#: Seconds a mirror has to resolve and accept a connection (all its addresses together), and to send each
#: piece of a download once it runs: without a network a download attempt gives up within seconds.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's download mirrors, file checksums (``sha256`` of the published ``.gz`` files, ``raw_sha256``
    of the files they hold, by which its files are recognized wherever they come from), class names and
    normalization constants (the mean and standard deviation of its training pixels scaled to [0, 1]).

    A bundled dataset ships inside the package: ``bundled`` is the folder of its two t10k files, and
    ``split`` says how they divide, the first ``split[0]`` images to train and the next ``split[1]`` to test.
    ``digits`` says its images are MNIST-style handwritten digits (light on dark, fitted in 20x20 and centred
    by mass in 28x28): ``xpcnn predict`` prepares a user's image the same way, and only resizes the others'.

    ``kind`` says how its files are stored: ``"idx"`` (MNIST's four IDX files), ``"cifar"`` (an official
    python-version archive, whose file name per part ``files`` gives: ``{"archive": "cifar-10-python.tar.gz"}``)
    or ``"image-folder"`` (a user's folder of images: no published files, classes or constants). ``mean`` and
    ``std`` are numbers, or tuples of one per channel (CIFAR's), or None (``image-folder``: the training
    images' own statistics are used). Datasets of a kind other than ``"idx"`` are photographs: ``xpcnn
    predict`` only resizes a user's image for them, never inverts it.
    """

    name: str
    mirrors: tuple[str, ...]
    sha256: dict[str, str]
    classes: tuple[str, ...]
    mean: float | tuple[float, ...] | None
    std: float | tuple[float, ...] | None
    bundled: Path | None = None
    split: tuple[int, int] | None = None
    raw_sha256: dict[str, str] = dataclasses.field(default_factory=dict)
    digits: bool = False
    kind: str = "idx"
    files: dict[str, str] = dataclasses.field(default_factory=dict)


DATASETS = {
    "mnist": DatasetInfo(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        {"train_images": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
         "train_labels": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
         "test_images": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
         "test_labels": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
        tuple(str(d) for d in range(10)), 0.1307, 0.3081,
        raw_sha256={"train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                    "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                    "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"},
        digits=True),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {"train_images": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
         "train_labels": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
         "test_images": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
         "test_labels": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"},
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        0.2860, 0.3530,
        raw_sha256={"train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                    "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                    "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                    "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"}),
    # MNIST's own test set, bundled: the first 8,000 digits train, the last 2,000 test (the same division as
    # `--dataset mnist --split-test-set 8000` on the t10k files). MNIST's normalization constants.
    "mnist-sample": DatasetInfo(
        "mnist-sample", (),
        {"test_images": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
         "test_labels": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
        tuple(str(d) for d in range(10)), 0.1307, 0.3081, bundled=SAMPLE_DIR, split=(8000, 2000),
        raw_sha256={"test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"},
        digits=True),
    # The official python-version archives (https://www.cs.toronto.edu/~kriz/cifar.html), SHA-256 as Keras's
    # and torchvision's loaders pin them. Normalization: the per-channel mean and (population) std of the
    # training set's 50,000 images scaled to [0, 1], as hlb-CIFAR10 and tinygrad use them for CIFAR-10 and as
    # weiaicunzai/pytorch-cifar100 gives them for CIFAR-100 (not the often-copied std (0.2023, 0.1994, 0.2010),
    # which is the std of per-image means).
    "cifar10": DatasetInfo(
        "cifar10", ("https://www.cs.toronto.edu/~kriz/",),
        {"archive": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"},
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (0.4913997551666284, 0.48215855929893703, 0.4465309133731618),
        (0.24703225141799082, 0.24348516474564, 0.26158783926049628),
        kind="cifar", files={"archive": "cifar-10-python.tar.gz"}),
    "cifar100": DatasetInfo(
        "cifar100", ("https://www.cs.toronto.edu/~kriz/",),
        {"archive": "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"},
        tuple("apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
              "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup "
              "dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower "
              "leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange "
              "orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit "
              "raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel "
              "streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip "
              "turtle wardrobe whale willow_tree wolf woman worm".split()),
        (0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
        (0.2673342858792401, 0.2564384629170883, 0.27615047132568404),
        kind="cifar", files={"archive": "cifar-100-python.tar.gz"}),
    # A user's own images, a class per sub-folder (xpcnn/data/image_folder.py): classes from the folder names,
    # normalization from the training images.
    "image-folder": DatasetInfo("image-folder", (), {}, (), None, None, kind="image-folder"),
}


@dataclass(repr=False)
class Split:
    """Images ``(N, H, W)`` or ``(N, C, H, W)`` uint8 (MNIST: ``(N, 28, 28)``; CIFAR: ``(N, 3, 32, 32)``) and
    labels ``(N,)`` int64, on the host, the name of the dataset they come from (``None`` for arrays made by
    hand; :func:`dataset_info` gives its classes and normalization), the files they were read from (``()`` for
    arrays made by hand), for messages, and the class names when the files name them (CIFAR's meta file, an
    image folder's sub-folders; else ``None``: the dataset's).

    A sequence of ``(image, label)`` pairs: ``split[i]`` is one, ``split[100:200]`` a Split of the same
    dataset (views, not copies). Raises :class:`ShapeError` when images and labels differ in number.
    """

    images: host.ndarray
    labels: host.ndarray
    dataset: str | None = None
    files: tuple[Path, ...] = ()
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        labels = getattr(self.labels, "shape", (len(self.labels),))
        images = getattr(self.images, "shape", (len(self.images),))
        if len(labels) != 1:
            raise ShapeError(f"labels must be 1-D (N,), got shape {tuple(labels)}")
        if not images or images[0] != labels[0]:
            raise ShapeError(f"{images[0] if images else 'no'} images but {labels[0]} labels"
                             f"{' in ' + ' and '.join(map(str, self.files)) if self.files else ''}: "
                             "a split needs one label per image")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (f"Split(images {tuple(self.images.shape)} {self.images.dtype}, "
                f"labels {tuple(self.labels.shape)} {self.labels.dtype}, dataset={self.dataset!r})")

    def __getitem__(self, index: int | slice) -> Split | tuple[host.ndarray, host.ndarray]:
        """``split[a:b]``: a :class:`Split` of the same dataset (views); ``split[i]``: ``(image, label)``."""
        if isinstance(index, slice):
            return Split(self.images[index], self.labels[index], self.dataset, self.files, self.classes)
        return self.images[index], self.labels[index]

    def take(self, start: int, stop: int | None = None) -> Split:
        """Images ``start:stop`` (a view, not a copy), of the same dataset: ``split[start:stop]``."""
        return self[start:stop]


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of dataset ``name``; raises :class:`DataError` naming the known ones."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for ``name``'s files, in order: $XPCNN_DATA, the user cache, then the system's
    (Debian's ``/usr/share/datasets/<name>``, or those of ``$XPCNN_SYSTEM_DATA``); given ``data_dir`` (--data-dir),
    only ``data_dir`` and ``data_dir/<name>``: an explicit folder is never replaced by another copy."""
    if data_dir is not None:
        return [Path(data_dir), Path(data_dir) / name]
    dirs: list[Path] = []
    if os.environ.get("XPCNN_DATA"):
        dirs += [Path(os.environ["XPCNN_DATA"]) / name, Path(os.environ["XPCNN_DATA"])]
    dirs += [cache_dir(name)] + [folder / name for folder in system_dirs()]
    return dirs


def system_dirs() -> list[Path]:
    """``$XPCNN_SYSTEM_DATA`` split at ``os.pathsep`` (set but empty: no folder), else ``[/usr/share/datasets]``."""
    return [Path(folder) for folder in os.environ.get("XPCNN_SYSTEM_DATA", SYSTEM_DATA).split(os.pathsep) if folder]


def cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/xpcnn/<name>`` (``~/.cache/xpcnn/<name>`` by default)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "xpcnn" / name


def _find(folder: Path, stem: str) -> Path | None:
    """``folder/stem.gz`` or ``folder/stem``, whichever is a file (the compressed one first), else None."""
    for candidate in (folder / (stem + ".gz"), folder / stem):
        if candidate.is_file():
            return candidate
    return None


def find_local(name: str, data_dir: str | os.PathLike | None = None, parts: tuple[str, ...] = tuple(FILES),
               dirs: list[Path] | None = None) -> dict[str, Path] | None:
    """Paths of ``parts`` in the first of ``dirs`` (default: :func:`search_dirs`) that holds all of them, or None.
    Never downloads."""
    for folder in search_dirs(name, data_dir) if dirs is None else dirs:
        found = {part: _find(folder, FILES[part]) for part in parts}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


class DownloadFailed(DataError):
    """No mirror delivered a file; ``reasons`` holds one ``"host: why"`` per mirror tried."""

    def __init__(self, filename: str, reasons: list[str]) -> None:
        super().__init__(f"could not download {filename} ({'; '.join(reasons) or 'no mirror'})")
        self.reasons = reasons


class DatasetNotFound(DataError):
    """No folder holds a dataset's files and none could be downloaded; ``download_error`` is why the download
    failed (None when none was tried)."""

    def __init__(self, message: str, download_error: DataError | None = None) -> None:
        super().__init__(message)
        self.download_error = download_error


def locate(name: str, data_dir: str | os.PathLike | None = None, parts: tuple[str, ...] = tuple(FILES),
           download: bool = True) -> dict[str, Path]:
    """Paths of ``parts`` of dataset ``name``: those in ``data_dir`` (or ``data_dir/<name>``) when it is given
    (an explicit folder is a promise that the files are there: nothing else is searched or downloaded), else
    the first folder of :func:`search_dirs` holding all of them, else a download into the user cache. A bundled
    dataset's files come from the package (its test parts only). Every file is recognized by its SHA-256, as
    :func:`~xpcnn.data.checksums.check_file` says (an unknown one warns with a :class:`DataWarning`).

    Raises :class:`DatasetNotFound` (a :class:`DataError`) in one line: every folder searched (``data_dir``
    when it does not exist or lacks the files), why the download failed, how to supply the files, and the
    datasets this machine has instead; :class:`DataError` for another dataset's (or another part's) file.
    """
    info = dataset_info(name)
    if info.bundled is not None:
        return _checked(info, _bundled_files(info, data_dir, parts))
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DatasetNotFound(_not_found(name, data_dir, parts, None))
    found = find_local(name, data_dir, parts)
    if found is not None:
        return _checked(info, found)
    download_error = None
    if download and data_dir is None:
        try:
            return {part: fetch(info, part) for part in parts}
        except DataError as exc:
            download_error = exc
    raise DatasetNotFound(_not_found(name, data_dir, parts, download_error), download_error)


def _not_found(name: str, data_dir: str | os.PathLike | None, parts: tuple[str, ...],
               download_error: DataError | None, wanted: str | None = None, supply: str | None = None) -> str:
    """The one-line message of :class:`DatasetNotFound`: ``wanted`` names the files looked for (default: the IDX
    files of ``parts``), ``supply`` says how to provide them (default: the four IDX files in a folder)."""
    searched = ", ".join(str(d) for d in search_dirs(name, data_dir))
    wanted = wanted or ", ".join(FILES[p] + "[.gz]" for p in parts)
    supply = supply or "put the four IDX files in a folder"
    hint = " (or: apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else ""
    here = available(data_dir if data_dir is not None and Path(data_dir).is_dir() else None, wanted=name)
    if data_dir is not None:
        why = (f"no such folder; pass the folder that holds {name}'s files ({wanted})"
               if not Path(data_dir).is_dir() else f"looked for {wanted} in {searched}; pass the folder that holds them")
        return (f"--data-dir {data_dir} not found: {why}, or drop --data-dir"
                + (f"; this machine has: {', '.join(here)}" if here else ""))
    return (f"dataset {name!r} not found: looked for {wanted} in {searched}; "
            + (f"download failed: {download_error}; " if download_error else "")
            + f"{supply} and pass --data-dir DIR, or set XPCNN_DATA{hint}"
            + (f"; this machine has: {', '.join(here)}" if here else ""))


def available(data_dir: str | os.PathLike | None = None, wanted: str | None = None) -> list[str]:
    """The datasets this machine can use without a download, each as the flags that use it and where it is,
    e.g. ``"--dataset mnist-sample (bundled: 8,000 train / 2,000 test images)"`` or ``"--dataset fashion-mnist
    (in /usr/share/datasets/fashion-mnist)"``. Only folders named after a dataset count (a bare $XPCNN_DATA or
    ``data_dir`` could hold any of them), except that dataset ``wanted`` is also looked for in ``data_dir``; a
    folder of only a dataset's test files is listed with ``--split-test-set N``."""
    found = []
    for name, info in DATASETS.items():
        if info.kind == "cifar":
            from xpcnn.data import cifar  # reads datasets' helpers: imported when used

            dirs = [d for d in search_dirs(name) if d.name == name]
            source = cifar.find_source(info, [Path(data_dir), *dirs] if name == wanted and data_dir else dirs)
            if source is not None and name != wanted:
                found.append(f"--dataset {name} (in {source.parent})")
            continue
        if info.kind != "idx":
            continue
        if info.bundled is not None:
            if info.split and all(_find(info.bundled, FILES[part]) for part in TEST_PARTS):
                found.append(f"--dataset {name} (bundled: {info.split[0]:,} train / {info.split[1]:,} test images)")
            continue
        dirs = [d for d in search_dirs(name) if d.name == name]
        if name == wanted and data_dir is not None:
            dirs = [Path(data_dir), Path(data_dir) / name] + dirs
        full = find_local(name, parts=tuple(FILES), dirs=dirs)
        tests = full or find_local(name, parts=TEST_PARTS, dirs=dirs)
        if full and name != wanted:
            found.append(f"--dataset {name} (in {full['train_images'].parent})")
        elif tests and not full:
            folder = tests["test_images"].parent
            found.append(f"--dataset {name} --data-dir {folder} --split-test-set N (only its test files)")
    return found


def _bundled_files(info: DatasetInfo, data_dir: str | os.PathLike | None, parts: tuple[str, ...]
                   ) -> dict[str, Path]:
    """The bundled dataset's files of ``parts`` (its test parts only). Raises :class:`DataError` for a
    ``data_dir`` (the files come from the package), a train part, or a file missing from the installation."""
    full = info.name.removesuffix("-sample")
    if data_dir is not None:
        raise DataError(f"--dataset {info.name} is bundled with xpcnn and reads no folder: drop --data-dir "
                        f"{data_dir}, or pass --dataset {full} --data-dir {data_dir}")
    if set(parts) - set(TEST_PARTS):
        raise DataError(f"{info.name} ships only MNIST's t10k files, not separate training files: "
                        f"datasets.load({info.name!r}) splits them into train and test")
    paths = {part: info.bundled / (FILES[part] + ".gz") for part in parts}  # type: ignore[operator]
    for path in paths.values():
        if not path.is_file():
            raise DataError(f"{path} is missing: this installation of xpcnn lacks its bundled sample; reinstall "
                            f"it (pip install --force-reinstall xpcnn), or use --dataset {full}")
    return paths


def unreachable(url: str, timeout: float | None = None) -> str | None:
    """Why ``url``'s server cannot be reached within ``timeout`` seconds (default :data:`CONNECT_TIMEOUT`, for
    the name lookup and the TCP connection to every address together), in a few words such as ``"connection
    refused"``; None when it accepts a connection, or when a proxy from the environment will carry the request.

    The attempt runs on a daemon thread that is left behind when it overruns (a name lookup cannot be
    interrupted), so that no network means an answer within ``timeout`` seconds.
    """
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        host = port = None
    if not host or not port:
        return f"{url!r} is not an http:// or https:// address"
    from urllib.request import getproxies, proxy_bypass  # loads http.client: only when a download is tried
    proxies = getproxies()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not proxy_bypass(host):
        return None
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(network_reason(exc))

    worker = threading.Thread(target=connect, name="xpcnn-connect", daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"no connection within {timeout:g} s"


def network_reason(exc: BaseException) -> str:
    """A few words for a failed connection or download, from the innermost cause inside requests' and
    urllib3's wrappers: ``"HTTP 404"``, ``"connection refused"``, ``"host name not resolved, no network?"``,
    ``"timed out"``, ``"network is unreachable"``, ..."""
    chain = _causes(exc)
    for cause in chain:
        status = getattr(getattr(cause, "response", None), "status_code", None)
        if isinstance(status, int):
            return f"HTTP {status}"
    for cause in chain:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not resolved, no network?"
    for cause in chain:
        if isinstance(cause, TimeoutError) or "timeout" in type(cause).__name__.lower():
            return "timed out"
    for cause in chain:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:100]}" if first else type(exc).__name__


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps (causes, contexts, a ``reason`` attribute, exceptions among its
    arguments), outermost first."""
    chain: list[BaseException] = []
    todo: list[object] = [exc]
    while todo:
        cause = todo.pop(0)
        if not isinstance(cause, BaseException) or any(cause is seen for seen in chain):
            continue
        chain.append(cause)
        todo += [cause.__cause__, cause.__context__, getattr(cause, "reason", None), *cause.args]
    return chain


def fetch(info: DatasetInfo, part: str) -> Path:
    """Download one file into the user cache with SHA-256 verification (pooch writes atomically), from the
    first of ``info.mirrors`` (or of ``$XPCNN_MIRROR``, space-separated) that works.

    A mirror is skipped when it does not accept a connection within :data:`CONNECT_TIMEOUT` seconds, and a
    download stalls out after :data:`READ_TIMEOUT`, so without a network this fails within seconds. Raises
    :class:`DataError` in one line: a failed SHA-256 check (the download is deleted), or per mirror why it
    failed (``"could not download t10k-labels-idx1-ubyte.gz (127.0.0.1:9: connection refused)"``). ``part`` is
    one of :data:`FILES`' (an IDX dataset's ``.gz`` files) or of ``info.files`` (CIFAR's ``"archive"``).
    """
    import pooch
    pooch.get_logger().setLevel("WARNING")  # the progress bar says what is downloading; errors say the rest
    folder = cache_dir(info.name)
    filename = info.files.get(part) or FILES[part] + ".gz"
    mirrors = os.environ.get("XPCNN_MIRROR", "").split() or list(info.mirrors)
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        why = unreachable(url)
        if why is None:
            downloader = pooch.HTTPDownloader(progressbar=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
            try:
                return Path(pooch.retrieve(url, known_hash=f"sha256:{info.sha256[part]}", fname=filename,
                                           path=folder, downloader=downloader))
            except ValueError as exc:
                if "hash" in str(exc).lower():  # pooch's hash mismatch: the download is deleted, never kept
                    raise DataError(f"{filename} from {mirror} failed its SHA-256 check ({exc})") from None
                why = network_reason(exc)
            except Exception as exc:  # network errors differ by transport; try the next mirror
                why = network_reason(exc)
        failures.append(f"{urllib.parse.urlsplit(url).netloc or mirror}: {why}")
    raise DownloadFailed(filename, failures)


def mnist_or_sample() -> tuple[str, str | None]:
    """``("mnist", None)`` when full MNIST is in a folder of :func:`search_dirs` or can be downloaded (it then
    is, into the user cache), else ``("mnist-sample", why the download failed)``, e.g. ``"127.0.0.1:9: connection
    refused"``: the dataset ``xpcnn train`` uses by default."""
    try:
        locate("mnist")
    except DatasetNotFound as exc:
        error = exc.download_error
        return "mnist-sample", "; ".join(error.reasons) if isinstance(error, DownloadFailed) else str(error)
    return "mnist", None


def load(name: str, data_dir: str | os.PathLike | None = None, download: bool = True, **options: Any
         ) -> tuple[Split, Split]:
    """``(train, test)`` splits of dataset ``name``, found or downloaded as :func:`locate` says; a bundled
    dataset's files divided as its ``split`` says (``"mnist-sample"``: the first 8,000 and the last 2,000);
    CIFAR's as :func:`xpcnn.data.cifar.load` says; ``"image-folder"``: the images in ``data_dir`` as
    :func:`xpcnn.data.image_folder.load` says, with its ``options`` (``image_size``, ``channels``,
    ``val_fraction``, ``seed``). Each split's ``dataset`` is ``name``. Raises :class:`DataError` in one line,
    TypeError for ``options`` given to another dataset."""
    info = dataset_info(name)
    if info.kind == "image-folder":
        from xpcnn.data import image_folder  # imports this module: imported when used

        return image_folder.load(data_dir, **options)
    if options:
        raise TypeError(f"datasets.load({name!r}) takes no options ({', '.join(options)}); only image-folder does")
    if info.kind == "cifar":
        from xpcnn.data import cifar

        return cifar.load(info, data_dir, download)
    if info.bundled is not None and info.split is not None:
        everything = _bundled_split(info, data_dir)
        return everything.take(0, info.split[0]), everything.take(info.split[0])
    paths = locate(name, data_dir, download=download)
    return (_split(paths["train_images"], paths["train_labels"], name),
            _split(paths["test_images"], paths["test_labels"], name))


def load_test_only(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Split:
    """Only the test split (for folders such as the shared MNIST test set; a bundled dataset's test part;
    CIFAR's test batch alone)."""
    info = dataset_info(name)
    if info.kind == "image-folder":
        raise DataError("image-folder has no separate test files: datasets.load('image-folder', DIR) splits them")
    if info.kind == "cifar":
        from xpcnn.data import cifar

        return cifar.load(info, data_dir, download, train=False)[1]
    if info.bundled is not None and info.split is not None:
        return _bundled_split(info, data_dir).take(info.split[0])
    paths = locate(name, data_dir, parts=TEST_PARTS, download=download)
    return _split(paths["test_images"], paths["test_labels"], name)


def _bundled_split(info: DatasetInfo, data_dir: str | os.PathLike | None) -> Split:
    """All images of a bundled dataset, checked to number ``sum(info.split)``."""
    paths = locate(info.name, data_dir, parts=TEST_PARTS)
    split = _split(paths["test_images"], paths["test_labels"], info.name)
    if info.split is not None and len(split) != sum(info.split):
        raise DataError(f"{paths['test_images']} holds {len(split)} images, not {sum(info.split)}: this "
                        "installation's bundled sample is damaged; reinstall xpcnn "
                        "(pip install --force-reinstall xpcnn)")
    return split


def _split(images_path: Path, labels_path: Path, dataset: str | None = None) -> Split:
    """The :class:`Split` in an images and a labels IDX file. Raises :class:`DataError` naming the file as
    :func:`~xpcnn.data.idx.read_images` and :func:`~xpcnn.data.idx.read_labels` say, when the counts differ,
    or for a label that is no class of ``dataset``."""
    images = read_images(images_path)
    labels = read_labels(labels_path)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
                        f"{labels.shape[0]} labels; the files do not belong together")
    classes = len(dataset_info(dataset).classes) if dataset in DATASETS else None
    if classes is not None and bool(host.xp.any(labels >= classes)):
        index = int(host.xp.argmax(host.xp.astype(labels >= classes, host.xp.int8)))
        raise DataError(f"{labels_path}: label {int(labels[index])} at index {index} is no class of {dataset} "
                        f"(0 to {classes - 1}); the file is damaged or belongs to another dataset")
    return Split(images, labels, dataset, (images_path, labels_path))


def _checked(info: DatasetInfo, paths: dict[str, Path]) -> dict[str, Path]:
    """``paths``, after recognizing each file by its SHA-256 (:func:`~xpcnn.data.checksums.check_file`)."""
    known = checksums.known_files(DATASETS.values())
    for part, path in paths.items():
        checksums.check_file(path, info, part, known, FILES)
    return paths
