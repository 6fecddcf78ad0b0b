"""CIFAR-10/100: the official python-version archives, written by the tests in the real format (no network),
read without running code from them; downloads from a local HTTP server; colour images through the Trainer
with per-channel normalization."""

from __future__ import annotations

import dataclasses
import json
import hashlib
import http.server
import pickle
import shutil
import tarfile
import threading
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import xpcnn
from cifar_files import CIFAR10_NAMES, batch, cifar10_members, random_images, write_cifar10, write_cifar100, write_tar
from xpcnn.data import datasets, safe_pickle
from xpcnn.data.batches import channel_statistics, normalize
from xpcnn.errors import DataError, DataWarning, ShapeError


def _load(name: str, folder: Path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the tests' archives are not the published ones
        return datasets.load(name, folder, **kwargs)


@pytest.fixture
def no_dataset_env(tmp_path: Path, monkeypatch) -> Path:
    """An empty user cache, no $XPCNN_DATA, no system folders: nothing but what a test puts there."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XPCNN_SYSTEM_DATA", "")
    monkeypatch.delenv("XPCNN_DATA", raising=False)
    monkeypatch.delenv("XPCNN_MIRROR", raising=False)
    return tmp_path / "cache" / "xpcnn"


# -- reading the archives ------------------------------------------------------------------------------------
def test_cifar10_archive_is_read(tmp_path: Path) -> None:
    archive, arrays = write_cifar10(tmp_path, per_batch=4, test=6)
    with pytest.warns(DataWarning, match=r"cifar-10-python.tar.gz is not cifar10's published cifar-10-python"):
        train, test = datasets.load("cifar10", tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and test.images.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(train.images, arrays["train_images"])  # batches 1..5 in order, R, G, B planes
    np.testing.assert_array_equal(train.labels, arrays["train_labels"])
    np.testing.assert_array_equal(test.images, arrays["test_images"])
    np.testing.assert_array_equal(test.labels, arrays["test_labels"])
    assert train.classes == tuple(CIFAR10_NAMES) == datasets.DATASETS["cifar10"].classes
    assert train.dataset == test.dataset == "cifar10" and train.files == (archive,)
    assert train[2:5].classes == train.classes  # slicing keeps the class names


def test_cifar10_pixels_are_channel_planes(tmp_path: Path) -> None:
    """A row of 3072 bytes is the 1024 red, then green, then blue pixels, each 32x32 row by row."""
    row = np.arange(3072, dtype=np.int64) % 251
    images = row.astype(np.uint8).reshape(1, 3, 32, 32)
    members, _ = cifar10_members()
    members["cifar-10-batches-py/test_batch"] = batch(images, [3])
    write_tar(tmp_path / "cifar-10-python.tar.gz", members)
    test = _load("cifar10", tmp_path)[1]
    assert test.images[0, 1, 0, 0] == row[1024] and test.images[0, 2, 31, 31] == row[3071]
    assert test.images[0, 0, 1, 0] == row[32]


def test_cifar100_archive_reads_fine_labels(tmp_path: Path) -> None:
    _, arrays = write_cifar100(tmp_path, train=8, test=5)
    train, test = _load("cifar100", tmp_path)
    assert train.images.shape == (8, 3, 32, 32) and test.images.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(train.labels, arrays["train_labels"])  # fine labels, not coarse
    np.testing.assert_array_equal(test.labels, arrays["test_labels"])
    assert len(train.classes) == 100 and train.classes[:2] == ("apple", "aquarium_fish")
    assert len(set(datasets.DATASETS["cifar100"].classes)) == 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        only = datasets.load_test_only("cifar100", tmp_path)
    np.testing.assert_array_equal(only.labels, arrays["test_labels"])


def test_extracted_folder_is_read_too(tmp_path: Path) -> None:
    """torchvision leaves the archive's folder extracted: it is read, as is that folder given itself."""
    archive, arrays = write_cifar10(tmp_path / "packed")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "data", filter="data")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # extracted files have no published checksums: no warning
        for folder in (tmp_path / "data", tmp_path / "data" / "cifar-10-batches-py"):
            train, test = datasets.load("cifar10", folder)
            np.testing.assert_array_equal(train.images, arrays["train_images"])
            assert test.classes == tuple(CIFAR10_NAMES)


def test_another_datasets_archive_is_refused(tmp_path: Path, monkeypatch) -> None:
    archive, _ = write_cifar100(tmp_path / "c100")
    (tmp_path / "c10").mkdir()
    shutil.copy(archive, tmp_path / "c10" / "cifar-10-python.tar.gz")
    info = datasets.DATASETS["cifar100"]
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(datasets.DATASETS, "cifar100", dataclasses.replace(info, sha256={"archive": digest}))
    with pytest.raises(DataError, match=r"is cifar100's cifar-100-python.tar.gz \(by its SHA-256\), not cifar10's"):
        datasets.load("cifar10", tmp_path / "c10")


# -- refusing what is not a CIFAR batch ------------------------------------------------------------------------
def _with_member(tmp_path: Path, name: str, data: bytes) -> Path:
    members, _ = cifar10_members()
    members[f"cifar-10-batches-py/{name}"] = data
    return write_tar(tmp_path / "cifar-10-python.tar.gz", members)


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))
    _with_member(tmp_path, "data_batch_3", pickle.dumps({b"data": Exploit()}, protocol=2))
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz:cifar-10-batches-py/data_batch_3: refused to read "
                                        r"it: the pickle asks for the global \S+, which a dataset's batch never holds") as caught:
        _load("cifar10", tmp_path)
    assert not marker.exists() and "\n" not in str(caught.value)


@pytest.mark.parametrize("payload", [
    pickle.dumps(np.zeros((2, 3072)), protocol=2),           # a float array: not CIFAR's pixels
    pickle.dumps(np.array([b"x"], dtype=object), protocol=2),  # an object array could hold anything
    pickle.dumps(np.zeros(3, np.uint8), protocol=5),         # protocol 5's _frombuffer, a bare array
])
def test_only_plain_values_and_integer_arrays_are_read(payload: bytes) -> None:
    try:
        value = safe_pickle.loads(payload, "batch")
    except DataError as exc:
        assert str(exc).startswith("batch: refused to read it") or "not a readable pickle" in str(exc)
    else:
        assert isinstance(value, np.ndarray) and value.dtype == np.uint8  # the uint8 array is fine


def test_safe_pickle_matches_pickle_on_real_shaped_batches() -> None:
    images = random_images(3, 5)
    data = batch(images, [1, 2, 3])
    ours, theirs = safe_pickle.loads(data, "batch"), pickle.loads(data, encoding="bytes")
    assert set(ours) == set(theirs) and ours[b"labels"] == theirs[b"labels"] == [1, 2, 3]
    np.testing.assert_array_equal(ours[b"data"], theirs[b"data"])
    fortran = pickle.dumps(np.asfortranarray(np.arange(12, dtype="<i8").reshape(3, 4)), protocol=4)
    np.testing.assert_array_equal(safe_pickle.loads(fortran, "f"), np.arange(12).reshape(3, 4))


@pytest.mark.parametrize(("member", "data", "message"), [
    ("data_batch_2", b"\x80\x02}q\x00(U\x04data", "data_batch_2: not a readable pickle"),
    ("data_batch_2", pickle.dumps([1, 2], protocol=2), "data_batch_2: holds a list, not a CIFAR batch's dict"),
    ("data_batch_2", pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2),
     "data_batch_2: no 'labels' in the batch (its keys: data)"),
    ("data_batch_2", batch(random_images(2, 0), [1]), "data_batch_2: 2 images but 1 labels"),
    ("data_batch_2", batch(random_images(2, 0), [1, 10]), "data_batch_2: label 10 at index 1 is no class (0 to 9)"),
    ("test_batch", pickle.dumps({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, protocol=2),
     "test_batch: 'data' must be uint8 rows of 3072 pixels (N, 3072), found uint8 (2, 1024)"),
    ("batches.meta", pickle.dumps({b"label_names": [b"cat"]}, protocol=2), "batches.meta: names 1 classes, cifar10 has 10"),
    ("batches.meta", pickle.dumps({b"names": []}, protocol=2), "batches.meta: no list of class names under 'label_names'"),
])
def test_damaged_members_are_one_line_naming_them(tmp_path: Path, member: str, data: bytes, message: str) -> None:
    _with_member(tmp_path, member, data)
    with pytest.raises(DataError, match="cifar-10-batches-py/" + message.replace("(", r"\(").replace(")", r"\)")) as caught:
        _load("cifar10", tmp_path)
    assert "\n" not in str(caught.value)


def test_missing_member_and_broken_archive(tmp_path: Path) -> None:
    members, _ = cifar10_members()
    del members["cifar-10-batches-py/data_batch_4"]
    write_tar(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz lacks cifar-10-batches-py/data_batch_4; the archive "
                                        r"is damaged or incomplete"):
        _load("cifar10", tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="not a readable tar.gz archive"):
        _load("cifar10", tmp_path)


# -- finding and downloading ---------------------------------------------------------------------------------
def test_missing_data_dir_and_offline_message(tmp_path: Path, no_dataset_env: Path, monkeypatch) -> None:
    with pytest.raises(datasets.DatasetNotFound, match=r"--data-dir .*nowhere not found: no such folder; pass the "
                                                        r"folder that holds cifar10's files \(cifar-10-python.tar.gz"):
        datasets.load("cifar10", tmp_path / "nowhere")
    monkeypatch.setenv("XPCNN_MIRROR", "http://127.0.0.1:9/")
    with pytest.raises(datasets.DatasetNotFound) as caught:
        datasets.load("cifar10")
    message = str(caught.value)
    assert message.startswith("dataset 'cifar10' not found: looked for cifar-10-python.tar.gz or its folder "
                              "cifar-10-batches-py in ")
    assert "download failed: could not download cifar-10-python.tar.gz (127.0.0.1:9: connection refused)" in message
    assert "put cifar-10-python.tar.gz (from https://www.cs.toronto.edu/~kriz/) in a folder and pass --data-dir DIR" \
        in message and "\n" not in message


@pytest.fixture
def mirror(tmp_path: Path):
    """A local HTTP server of a folder holding a small cifar-10-python.tar.gz: ``(folder, url, arrays)``."""
    served = tmp_path / "served"
    _, arrays = write_cifar10(served)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/", arrays
    server.shutdown()


def test_download_verifies_and_caches(no_dataset_env: Path, monkeypatch, mirror) -> None:
    served, url, arrays = mirror
    digest = hashlib.sha256((served / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    info = dataclasses.replace(datasets.DATASETS["cifar10"], sha256={"archive": digest})
    monkeypatch.setitem(datasets.DATASETS, "cifar10", info)  # the served archive stands for the published one
    monkeypatch.setenv("XPCNN_MIRROR", url)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # its checksum is the known one now
        train, _ = datasets.load("cifar10")
    np.testing.assert_array_equal(train.images, arrays["train_images"])
    cached = no_dataset_env / "cifar10" / "cifar-10-python.tar.gz"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest
    (served / "cifar-10-python.tar.gz").unlink()  # the cache serves the next load
    np.testing.assert_array_equal(datasets.load("cifar10")[1].labels, arrays["test_labels"])
    assert any("--dataset cifar10 (in " in line for line in datasets.available())


def test_download_with_wrong_checksum_is_refused(no_dataset_env: Path, monkeypatch, mirror) -> None:
    _, url, _ = mirror
    monkeypatch.setenv("XPCNN_MIRROR", url)  # serves the tests' archive, not the published one
    with pytest.raises(DataError, match="cifar-10-python.tar.gz from .* failed its SHA-256 check"):
        datasets.load("cifar10")
    assert not (no_dataset_env / "cifar10" / "cifar-10-python.tar.gz").exists()


# -- colour images, per-channel normalization ------------------------------------------------------------------
def test_per_channel_normalization_matches_torchvision_normalize() -> None:
    images = random_images(4, 3)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    expected = (images.astype(np.float32) / 255.0 - np.array(mean, np.float32)[:, None, None]) / \
        np.array(std, np.float32)[:, None, None]
    np.testing.assert_allclose(normalize(images, mean, std), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(normalize(images, 0.5, 0.25), (images / 255.0 - 0.5) / 0.25, rtol=1e-5, atol=1e-5)
    with pytest.raises(ShapeError, match=r"the normalization's mean \(0.5, 0.5\) has 2 entries but the images have "
                                         r"3 channels"):
        normalize(images, (0.5, 0.5), 0.25)


def test_channel_statistics() -> None:
    images = random_images(9, 4)
    means, stds = channel_statistics(images, chunk=4)
    x = images.astype(np.float64) / 255.0
    np.testing.assert_allclose(means, x.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(stds, x.std(axis=(0, 2, 3)), rtol=1e-6)
    assert channel_statistics(np.full((2, 5, 5), 7, np.uint8))[1] == (1.0,)  # one value everywhere: std 1


def _rgb_model(seed: int = 0) -> xpcnn.Sequential:
    L = xpcnn.layers
    return xpcnn.Sequential([L.Conv2D(3, 8, 3, padding="same", seed=(seed, 0)), L.ReLU(), L.MaxPool2D(2),
                             L.Conv2D(8, 8, 3, padding="same", seed=(seed, 1)), L.ReLU(), L.MaxPool2D(2),
                             L.Flatten(), L.Dense(8 * 8 * 8, 10, seed=(seed, 2))])


def test_trainer_trains_on_cifar_with_its_per_channel_constants(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=16, test=16)
    train, test = _load("cifar10", tmp_path)
    model = _rgb_model()
    trainer = xpcnn.Trainer(model, xpcnn.optim.Adam(model, lr=1e-3), progress=False)
    history = trainer.fit(train, test, epochs=2, batch_size=16)
    info = datasets.DATASETS["cifar10"]
    assert trainer.normalization == (info.mean, info.std) and len(info.mean) == 3
    assert len(history) == 2 and np.isfinite(history[-1]["val_loss"])
    trainer.save(tmp_path / "last.npz")
    checkpoint = xpcnn.checkpoint.load_checkpoint(tmp_path / "last.npz")
    assert checkpoint.meta["trainer"]["normalization"] == [list(info.mean), list(info.std)]
    model.save(tmp_path / "model.npz")
    loaded = xpcnn.load(tmp_path / "model.npz")
    assert loaded.normalization == (info.mean, info.std)
    np.testing.assert_allclose(xpcnn.Trainer(loaded, progress=False).predict(test.images),
                               trainer.predict(test.images), rtol=1e-5, atol=1e-6)
    resumed = xpcnn.Trainer(_rgb_model(1), xpcnn.optim.Adam(_rgb_model(1)), progress=False)
    resumed.restore(checkpoint)
    assert resumed.normalization == (info.mean, info.std)


def test_trainer_refuses_normalization_for_other_channel_counts() -> None:
    images = random_images(4, 0)
    split = datasets.Split(images, np.zeros(4, np.int64))
    model = _rgb_model()
    trainer = xpcnn.Trainer(model, xpcnn.optim.Adam(model), normalization=((0.5,), (0.2,)), progress=False)
    with pytest.raises(ShapeError, match=r"normalization's mean \(0.5,\) has 1 entries but the images have 3"):
        trainer.fit(split, epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="as many means as stds"):
        xpcnn.Trainer(model, normalization=((0.5, 0.5, 0.5), (0.2, 0.2)))


def test_a_grey_model_is_refused_colour_images_naming_both_counts(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    train, _ = _load("cifar10", tmp_path)
    model = xpcnn.models.build("seed-deep")
    trainer = xpcnn.Trainer(model, xpcnn.optim.Adam(model), progress=False)
    with pytest.raises(ShapeError, match=r"expects 1 input channel, but the images have 3"):
        trainer.fit(train, epochs=1)


def test_archive_bytes_are_not_extracted_to_disk(tmp_path: Path) -> None:
    """A member named to escape the folder is never written anywhere: nothing is extracted."""
    members, _ = cifar10_members()
    members["../escaped"] = b"x"
    write_tar(tmp_path / "cifar-10-python.tar.gz", members)
    _load("cifar10", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]
    assert not (tmp_path.parent / "escaped").exists()


# -- the xpcnn command -------------------------------------------------------------------------------------------
def _error_lines(result) -> list[str]:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if ": error: " in line]


@pytest.mark.subprocesses
def test_cli_says_the_preset_takes_one_channel(tmp_path: Path) -> None:
    from test_cli import run_cli
    write_cifar10(tmp_path / "data")
    result = run_cli("train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "r"))
    errors = _error_lines(result)
    assert errors == ["xpcnn train: error: --model seed-deep takes 1-channel images, but --dataset cifar10 has "
                      "3-channel images (3, 32, 32); no preset takes 3 channels yet"] or \
        errors[0].startswith("xpcnn train: error: --model seed-deep takes 1-channel images, but --dataset cifar10 has "
                             "3-channel images (3, 32, 32); pass --model ")
    assert all(line.startswith("xpcnn train: ") for line in result.stderr.splitlines())  # a warning, then the error


@pytest.mark.subprocesses
def test_cli_evaluates_and_predicts_with_an_rgb_model(tmp_path: Path) -> None:
    from test_cli import run_cli
    pytest.importorskip("PIL")
    from PIL import Image
    write_cifar10(tmp_path / "data", per_batch=8, test=8)
    train, test = _load("cifar10", tmp_path / "data")
    model = _rgb_model()
    trainer = xpcnn.Trainer(model, xpcnn.optim.Adam(model), progress=False)
    trainer.fit(train, epochs=1, batch_size=8)
    trainer.extra_meta = {"dataset": "cifar10", "classes": list(train.classes), "image_shape": [3, 32, 32]}
    trainer.save(tmp_path / "rgb.npz")
    evaluated = run_cli("evaluate", str(tmp_path / "rgb.npz"), "--data-dir", str(tmp_path / "data"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["images"] == 8 and report["dataset"] == "cifar10"
    assert report["accuracy"] == pytest.approx(trainer.evaluate(test)["accuracy"])
    picture = tmp_path / "photo.png"
    Image.fromarray(np.transpose(test.images[0], (1, 2, 0))).resize((64, 48)).save(picture)  # any size, RGB
    predicted = run_cli("predict", str(tmp_path / "rgb.npz"), str(picture))
    assert predicted.returncode == 0, predicted.stderr
    name, probability = predicted.stdout.strip().rsplit(": ", 1)[1].split(" (")
    expected = trainer.predict(read_photo_for_test(picture))[0]
    assert name == CIFAR10_NAMES[int(np.argmax(expected))]
    assert float(probability.rstrip(")")) == pytest.approx(float(expected.max()), abs=1e-3)


def read_photo_for_test(path: Path) -> np.ndarray:
    """What predict feeds an RGB CIFAR model: RGB, resized bilinearly to 32x32, (1, 3, 32, 32)."""
    from PIL import Image
    return np.transpose(np.asarray(Image.open(path).convert("RGB").resize((32, 32), Image.BILINEAR)), (2, 0, 1))[None]
