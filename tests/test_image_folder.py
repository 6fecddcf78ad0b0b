"""image-folder: a user's own PNG/JPEG files, a class per sub-folder (written by the tests with Pillow), through
datasets.load, the Trainer and the xpcnn command (train, evaluate, predict) in RGB and grey."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import xpcnn
from test_cli import assert_one_line_error, run_cli
from xpcnn.data import datasets
from xpcnn.data.images import read_photo
from xpcnn.errors import DataError

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

COLOURS = {"blue": (30, 40, 210), "green": (40, 200, 50), "red": (220, 30, 40)}


def write_folder(root: Path, per_class: int = 10, size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    """``root/<colour>/<i>.png|.jpg``: noisy images of one colour per class, of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.integers(-25, 25, size=(size[1], size[0], 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / (f"{i}.png" if i % 2 else f"{i}.jpg"))
    (root / "red" / "notes.txt").write_text("not an image: skipped, as torchvision skips it")
    (root / ".hidden").mkdir(exist_ok=True)
    return root


def test_folder_is_read_like_torchvision_imagefolder(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "photos")
    train, test = datasets.load("image-folder", root, image_size=16, channels=3, val_fraction=0.2, seed=0)
    assert train.classes == test.classes == ("blue", "green", "red")  # sorted folder names, hidden one skipped
    assert train.images.shape == (24, 3, 16, 16) and test.images.shape == (6, 3, 16, 16)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert np.bincount(test.labels).tolist() == [2, 2, 2]  # a fifth of each class
    red = train.images[train.labels == 2].astype(float).mean(axis=(0, 2, 3))
    assert red[0] > 180 and red[1] < 80 and red[2] < 80  # channel 0 is red: RGB order, (C, H, W)
    assert train.dataset == "image-folder" and train.files == (root,)
    again = datasets.load("image-folder", root, image_size=16, channels=3, val_fraction=0.2, seed=0)[1]
    np.testing.assert_array_equal(again.images, test.images)  # seeded
    other = datasets.load("image-folder", root, image_size=16, channels=3, val_fraction=0.2, seed=1)[1]
    assert not np.array_equal(other.images, test.images)


def test_grey_and_size(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "photos", per_class=3)
    train, test = datasets.load("image-folder", root, image_size=28, channels=1)
    assert train.images.shape[1:] == (1, 28, 28) and len(train) + len(test) == 9 and len(test) == 3
    path = root / "green" / "1.png"
    expected = np.asarray(Image.open(path).convert("L").resize((28, 28), Image.BILINEAR))
    np.testing.assert_array_equal(read_photo(path, 28, 1)[0], expected)


def test_train_and_test_subfolders_are_the_split(tmp_path: Path) -> None:
    write_folder(tmp_path / "d" / "train", per_class=4)
    write_folder(tmp_path / "d" / "test", per_class=2, seed=1)
    train, test = datasets.load("image-folder", tmp_path / "d", image_size=8)
    assert (len(train), len(test)) == (12, 6) and test.classes == ("blue", "green", "red")
    (tmp_path / "d" / "test" / "violet").mkdir()
    Image.new("RGB", (5, 5)).save(tmp_path / "d" / "test" / "violet" / "a.png")
    with pytest.raises(DataError, match=r"violet: class 'violet' is not among the training folder's classes"):
        datasets.load("image-folder", tmp_path / "d", image_size=8)


@pytest.mark.parametrize(("arrange", "message"), [
    (lambda root: None, "has no class folders: image-folder takes a folder with one sub-folder of PNG/JPEG images"),
    (lambda root: (root / "cat").mkdir(), "cat: class folder without PNG/JPEG files"),
    (lambda root: ((root / "cat").mkdir(), (root / "cat" / "x.png").write_bytes(b"not a png"),
                   (root / "cat" / "y.png").write_bytes(b"nor this")),
     r"cat/[xy].png: cannot read it as an image"),
    (lambda root: ((root / "cat").mkdir(), Image.new("RGB", (4, 4)).save(root / "cat" / "a.png")),
     "too few images to hold any out for testing"),
])
def test_bad_folders_are_one_line_naming_them(tmp_path: Path, arrange, message: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    arrange(root)
    with pytest.raises(DataError, match=message) as caught:
        datasets.load("image-folder", root)
    assert "\n" not in str(caught.value)


def test_missing_folder_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--dataset image-folder reads your own images: pass --data-dir DIR"):
        datasets.load("image-folder")
    with pytest.raises(DataError, match="nowhere not found: no such folder"):
        datasets.load("image-folder", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
        datasets.load("image-folder", tmp_path, val_fraction=1.0)
    with pytest.raises(TypeError, match="only image-folder does"):
        datasets.load("cifar10", tmp_path, image_size=8)


def test_trainer_uses_the_folders_own_per_channel_statistics(tmp_path: Path) -> None:
    train, test = datasets.load("image-folder", write_folder(tmp_path / "p"), image_size=8)
    L = xpcnn.layers
    model = xpcnn.Sequential([L.Conv2D(3, 4, 3, padding="same", seed=(0, 0)), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                              L.Dense(4 * 4 * 4, 3, seed=(0, 4))])
    trainer = xpcnn.Trainer(model, xpcnn.optim.Adam(model, lr=1e-2), progress=False)
    trainer.fit(train, test, epochs=3, batch_size=8)
    mean, std = trainer.normalization
    x = train.images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-5)
    assert trainer.evaluate(test)["accuracy"] == 1.0  # three colours: easy


@pytest.mark.subprocesses
def test_cli_trains_evaluates_and_predicts_on_an_image_folder(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "photos")
    out = tmp_path / "run"
    grey = ["--dataset", "image-folder", "--data-dir", str(root), "--channels", "1"]
    assert_one_line_error(run_cli("train", *grey, "--out", str(out)),
                          "--model seed-deep does not take 32x32 images (--image-size 32); pass --image-size 28")
    assert_one_line_error(run_cli("train", "--dataset", "image-folder", "--data-dir", str(root), "--out", str(out)),
                          "--model seed-deep takes 1-channel images, but --dataset image-folder has 3-channel images "
                          "(3, 32, 32)")
    result = run_cli("train", *grey, "--image-size", "28", "--epochs", "3", "--lr", "0.003", "--out", str(out),
                     "--no-progress", "--force")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["per_class_recall"]) == 3  # the preset's head fitted to 3 classes
    checkpoint = xpcnn.checkpoint.load_checkpoint(out / "last.npz")
    assert checkpoint.meta["classes"] == ["blue", "green", "red"] and checkpoint.meta["image_shape"] == [1, 28, 28]
    assert checkpoint.meta["run"]["image_size"] == 28 and checkpoint.meta["run"]["channels"] == 1
    assert len(checkpoint.meta["trainer"]["normalization"][0]) == 1  # the folder's own grey statistics
    evaluated = run_cli("evaluate", str(out / "last.npz"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["images"] == 6 and report["which"].startswith("held-out images (--val-fraction 0.2")
    predicted = run_cli("predict", str(out / "last.npz"), str(root / "red" / "1.png"), str(root / "blue" / "2.jpg"))
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.splitlines()
    assert lines[0].startswith(f"{root / 'red' / '1.png'}: ") and lines[1].startswith(f"{root / 'blue' / '2.jpg'}: ")
    assert_one_line_error(run_cli("train", "--dataset", "mnist-sample", "--image-size", "28", "--out",
                                  str(tmp_path / "x")), "--image-size applies to --dataset image-folder only")
