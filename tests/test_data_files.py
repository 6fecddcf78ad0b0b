"""Data files that are wrong in every way a tester found (issue 16, item 7): each is refused in one line naming
the file and what was wrong, before any training. Real files written into tmp_path; CLI cases as subprocesses."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import xpcnn
from xpcnn.data import datasets
from xpcnn.data.datasets import Split
from xpcnn.data.idx import read_images, read_labels, write_idx
from xpcnn.errors import DataError, DataWarning, ShapeError


def write_split(folder: Path, images: np.ndarray, labels: np.ndarray, *, image_type: str = "uint8",
                label_type: str = "uint8", part: str = "test") -> tuple[Path, Path]:
    """Write ``images`` and ``labels`` as the IDX files of ``part`` ("test": t10k, "train") in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    images_path = folder / (datasets.FILES[f"{part}_images"] + ".gz")
    labels_path = folder / (datasets.FILES[f"{part}_labels"] + ".gz")
    write_idx(images_path, images, dtype=image_type)
    write_idx(labels_path, labels, dtype=label_type)
    return images_path, labels_path


def digits(n: int = 6, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8), np.arange(n) % 10


def load_quietly(folder: Path, name: str = "mnist") -> Split:
    """The test split in ``folder``, with the unknown-checksum warning of hand-made files expected."""
    with pytest.warns(DataWarning, match="is not .* published"):
        return datasets.load_test_only(name, folder)


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xpcnn.cli.main", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})


def assert_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """One error line on stderr, the last (after one-line warnings and what train announces), no traceback, a
    non-zero exit; returns the line."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert [line for line in lines if ": error: " in line] == lines[-1:], result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


# -- element types, counts and sizes, named by file --------------------------------------------------------------

def test_float_labels_are_refused_not_truncated(tmp_path: Path) -> None:
    images, labels = digits()
    _, labels_path = write_split(tmp_path, images, labels + 0.5, label_type="float32")
    with pytest.raises(DataError) as info:
        datasets.load_test_only("mnist", tmp_path)
    assert str(info.value) == (f"{labels_path}: labels must be integers, best unsigned bytes (IDX type 0x08), "
                               "found float32 (0x0D); write the class indices as uint8")


@pytest.mark.parametrize("image_type, values", [("int32", 1000), ("float32", float("nan")), ("float64", 0.5)])
def test_images_that_are_not_bytes_are_refused(tmp_path: Path, image_type: str, values: float) -> None:
    images, labels = digits()
    images_path, _ = write_split(tmp_path, np.full(images.shape, values), labels, image_type=image_type)
    expected = f"images must be unsigned bytes \\(IDX type 0x08\\), found {image_type}"
    with pytest.raises(DataError, match=expected) as info:
        datasets.load_test_only("mnist", tmp_path)
    assert str(info.value).startswith(f"{images_path}: ")


def test_integer_labels_of_other_widths_are_read_and_negative_ones_refused(tmp_path: Path) -> None:
    images, labels = digits()
    write_split(tmp_path, images, labels, label_type="int32")
    assert load_quietly(tmp_path).labels.tolist() == labels.tolist()
    _, labels_path = write_split(tmp_path, images, labels - 1, label_type="int8")
    with pytest.raises(DataError, match=f"^{labels_path}: label -1 at index 0 is negative"):
        read_labels(labels_path)


def test_labels_beyond_the_datasets_classes_name_the_file(tmp_path: Path) -> None:
    images, labels = digits()
    labels[3] = 12
    _, labels_path = write_split(tmp_path, images, labels)
    with pytest.raises(DataError, match=f"^{labels_path}: label 12 at index 3 is no class of mnist \\(0 to 9\\)"):
        load_quietly(tmp_path)


def test_empty_files_are_an_error_naming_the_file(tmp_path: Path) -> None:
    images_path, labels_path = write_split(tmp_path, np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8))
    with pytest.raises(DataError, match=f"^{images_path}: holds no images"):
        load_quietly(tmp_path)
    write_idx(labels_path, np.zeros(0, np.uint8))
    with pytest.raises(DataError, match=f"^{labels_path}: holds no labels"):
        read_labels(labels_path)


def test_header_against_file_length_names_the_file(tmp_path: Path) -> None:
    images, _ = digits(3)
    path = tmp_path / "long-idx3-ubyte"
    write_idx(path, images)
    path.write_bytes(path.read_bytes() + b"\0" * 7)
    with pytest.raises(DataError, match=f"^{path}: header promises \\(3, 28, 28\\) = 2352 bytes of data, the file "
                                        "holds 2359"):
        read_images(path)
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match=f"^{path}: truncated header \\(6 bytes; a 3-D IDX header takes 16\\)"):
        read_images(path)


def test_labels_file_given_as_images_says_so(tmp_path: Path) -> None:
    images, labels = digits()
    images_path, labels_path = write_split(tmp_path, images, labels)
    shutil.copy(labels_path, images_path)
    with pytest.raises(DataError, match=f"^{images_path}: images must be a 3-D .* is this a labels file"):
        load_quietly(tmp_path)


def test_counts_that_differ_name_both_files(tmp_path: Path) -> None:
    images, labels = digits(6)
    images_path, labels_path = write_split(tmp_path, images, labels[:4])
    with pytest.raises(DataError, match=f"{images_path} holds 6 images but {labels_path} holds 4 labels"):
        load_quietly(tmp_path)


def test_images_the_model_cannot_take_fail_before_training_naming_the_files(tmp_path: Path) -> None:
    images, labels = digits(8, size=32)
    images_path, labels_path = write_split(tmp_path, images, labels)
    split = load_quietly(tmp_path)
    assert split.files == (images_path, labels_path)
    model = xpcnn.models.build("seed-simple", seed=0)
    before = [np.array(p) for layer in model.layers for p in layer.params.values()]
    trainer = xpcnn.Trainer(model, xpcnn.optim.Adam(model), progress=False)
    with pytest.raises(ShapeError) as info:
        trainer.fit(split, epochs=1, batch_size=4)
    message = str(info.value)
    assert message.startswith(f"{images_path} and {labels_path}: images of shape (C, H, W) = (1, 32, 32) do not fit")
    assert "it takes images of shape (1, 28, 28)" in message and "\n" not in message
    assert trainer.global_step == 0
    after = [np.array(p) for layer in model.layers for p in layer.params.values()]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_cli_names_the_file_of_a_wrong_element_type(tmp_path: Path) -> None:
    images, labels = digits(20)
    _, labels_path = write_split(tmp_path / "data", images, labels + 0.25, label_type="float64")
    result = cli("train", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--split-test-set", "10",
                 "--epochs", "1", "--out", str(tmp_path / "out"), "--no-progress")
    assert_error_line(result, f"{labels_path}: labels must be integers", "found float64 (0x0E)")
    assert not (tmp_path / "out" / "last.npz").exists()


# -- known datasets by checksum ----------------------------------------------------------------------------------

def copy_sample(folder: Path, raw: bool = False, names: dict[str, str] | None = None) -> Path:
    """MNIST's t10k files (the bundled sample) in ``folder``, decompressed for ``raw``, renamed as ``names`` says
    (part -> the part whose name it gets)."""
    folder.mkdir(parents=True, exist_ok=True)
    for part in datasets.TEST_PARTS:
        data = (datasets.SAMPLE_DIR / (datasets.FILES[part] + ".gz")).read_bytes()
        target = datasets.FILES[(names or {}).get(part, part)]
        if raw:
            (folder / target).write_bytes(gzip.decompress(data))
        else:
            (folder / (target + ".gz")).write_bytes(data)
    return folder


@pytest.mark.parametrize("raw", [False, True], ids=["gz", "raw"])
def test_mnist_files_are_not_accepted_as_fashion_mnist(tmp_path: Path, raw: bool) -> None:
    folder = copy_sample(tmp_path / "data", raw=raw)
    with pytest.raises(DataError) as info:
        datasets.load_test_only("fashion-mnist", folder)
    message = str(info.value)
    assert message.startswith(f"{folder / 't10k-images-idx3-ubyte'}")
    assert "is mnist's t10k-images-idx3-ubyte (by its SHA-256), not fashion-mnist's: pass --dataset mnist" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MNIST's own files, raw or compressed: recognized, no warning
        assert len(datasets.load_test_only("mnist", folder)) == 10000


def test_fashion_mnist_files_are_not_accepted_as_mnist(tmp_path: Path) -> None:
    system = Path(datasets.SYSTEM_DATA) / "fashion-mnist"
    if not (system / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST is not installed in {system} (apt-get install dataset-fashion-mnist)")
    (tmp_path / "data").mkdir()
    for part in datasets.TEST_PARTS:
        shutil.copy(system / (datasets.FILES[part] + ".gz"), tmp_path / "data")
    with pytest.raises(DataError, match="is fashion-mnist's t10k-images-idx3-ubyte .* pass --dataset fashion-mnist"):
        datasets.load_test_only("mnist", tmp_path / "data")


def test_misnamed_parts_of_a_known_dataset_are_refused(tmp_path: Path) -> None:
    folder = copy_sample(tmp_path / "data", names={"test_images": "train_images", "test_labels": "train_labels"})
    with pytest.raises(DataError, match="is mnist's t10k-images-idx3-ubyte \\(by its SHA-256\\), not its "
                                        "train-images-idx3-ubyte: the files are misnamed"):
        datasets.locate("mnist", folder, parts=("train_images", "train_labels"))


def test_own_files_warn_once_each_and_are_used(tmp_path: Path) -> None:
    images, labels = digits()
    images_path, labels_path = write_split(tmp_path, images, labels)
    with pytest.warns(DataWarning) as record:
        split = datasets.load_test_only("mnist", tmp_path)
    messages = [str(w.message) for w in record if issubclass(w.category, DataWarning)]
    assert messages[0].startswith(f"{images_path} is not mnist's published t10k-images-idx3-ubyte (its SHA-256 ")
    assert messages[1].startswith(f"{labels_path} is not mnist's published t10k-labels-idx1-ubyte")
    assert all("\n" not in m for m in messages) and len(split) == 6


def test_the_bundled_sample_passes_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, test = datasets.load("mnist-sample")
    assert (len(train), len(test)) == (8000, 2000)


def test_cli_refuses_mnist_as_fashion_mnist(tmp_path: Path) -> None:
    folder = copy_sample(tmp_path / "data")
    result = cli("train", "--dataset", "fashion-mnist", "--data-dir", str(folder), "--split-test-set", "8000",
                 "--epochs", "1", "--out", str(tmp_path / "out"), "--no-progress")
    assert_error_line(result, f"{folder / 't10k-images-idx3-ubyte.gz'} is mnist's", "pass --dataset mnist")


def test_cli_prints_the_unknown_checksum_warning_in_one_line(tmp_path: Path) -> None:
    images, labels = digits(8, size=32)
    images_path, _ = write_split(tmp_path / "data", images, labels)
    result = cli("train", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--split-test-set", "4",
                 "--model", "seed-simple", "--epochs", "1", "--out", str(tmp_path / "out"), "--no-progress")
    warning_lines = [line for line in result.stderr.splitlines() if ": warning: " in line]
    assert warning_lines[0].startswith(f"xpcnn train: warning: {images_path} is not mnist's published"), result.stderr
    assert len(warning_lines) == 2 and "UserWarning" not in result.stderr and "warnings.warn" not in result.stderr
    assert_error_line(result, "images of shape (C, H, W) = (1, 32, 32) do not fit", "(1, 28, 28)")


# -- --data-dir is the only place looked at when given -----------------------------------------------------------

@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch) -> Path:
    """A usable MNIST test set in $XPCNN_DATA, which an explicit --data-dir must not fall back to."""
    monkeypatch.setenv("XPCNN_DATA", str(copy_sample(tmp_path / "env" / "mnist").parent))
    monkeypatch.setenv("XPCNN_SYSTEM_DATA", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def test_a_missing_data_dir_is_an_error_naming_it(elsewhere: Path) -> None:
    assert len(datasets.load_test_only("mnist")) == 10000  # found in $XPCNN_DATA without --data-dir
    missing = elsewhere / "no-such-folder"
    with pytest.raises(datasets.DatasetNotFound, match=f"^--data-dir {missing} not found: no such folder; "):
        datasets.load_test_only("mnist", missing)


def test_a_data_dir_without_the_files_is_an_error_naming_it(elsewhere: Path) -> None:
    empty = elsewhere / "empty"
    empty.mkdir()
    with pytest.raises(datasets.DatasetNotFound) as info:
        datasets.load_test_only("mnist", empty)
    message = str(info.value)
    assert message.startswith(f"--data-dir {empty} not found: looked for t10k-images-idx3-ubyte[.gz], "
                              f"t10k-labels-idx1-ubyte[.gz] in {empty}, {empty / 'mnist'}; ")
    assert str(elsewhere / "env") not in message.split("this machine has")[0]


def test_cli_missing_data_dir_with_another_copy_elsewhere(tmp_path: Path) -> None:
    env = str(copy_sample(tmp_path / "env" / "mnist").parent)
    result = cli("train", "--dataset", "mnist", "--data-dir", str(tmp_path / "nope"), "--split-test-set", "8000",
                 "--epochs", "1", "--out", str(tmp_path / "out"), "--no-progress", XPCNN_DATA=env)
    assert_error_line(result, f"--data-dir {tmp_path / 'nope'} not found: no such folder")
    assert not (tmp_path / "out" / "last.npz").exists()


# -- Split as a sequence -----------------------------------------------------------------------------------------

def test_split_slices_like_a_sequence() -> None:
    train, _ = datasets.load("mnist-sample")
    part = train[:100]
    assert isinstance(part, Split) and len(part) == 100 and part.dataset == "mnist-sample"
    assert part.files == train.files and len(train.files) == 2
    assert np.shares_memory(part.images, train.images)  # a view, as take() gives
    np.testing.assert_array_equal(train[10:20].labels, train.take(10, 20).labels)
    image, label = train[3]
    assert image.shape == (28, 28) and int(label) == int(train.labels[3])
    assert repr(part) == "Split(images (100, 28, 28) uint8, labels (100,) int64, dataset='mnist-sample')"


def test_split_refuses_mismatched_counts() -> None:
    images = np.zeros((128, 28, 28), np.uint8)
    with pytest.raises(ShapeError, match="^128 images but 100 labels: a split needs one label per image"):
        Split(images, np.zeros(100, np.int64))
    with pytest.raises(ShapeError, match="labels must be 1-D"):
        Split(images, np.zeros((128, 1), np.int64))
