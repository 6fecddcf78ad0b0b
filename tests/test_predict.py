"""``xpcnn predict`` on real PNG files (issue 16, items 10 and 6): images prepared as the checkpoint's dataset's
were (MNIST's digits centred by mass, Fashion-MNIST's items only resized), transparency composited, a blank
image answered with a warning, a decompression bomb refused in one line."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import xpcnn
from xpcnn.data import datasets
from xpcnn.data.images import is_blank, load_image, prepare, read_grey
from xpcnn.errors import DataError

Image = pytest.importorskip("PIL.Image")

FASHION = Path(datasets.SYSTEM_DATA) / "fashion-mnist"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xpcnn.cli.main", *args], capture_output=True, text=True,
                          timeout=600)


def train_checkpoint(folder: Path, name: str, train: datasets.Split) -> Path:
    """A seed-simple model trained one epoch on 3,000 of ``train``, saved as ``xpcnn train`` saves it."""
    model = xpcnn.models.build("seed-simple", seed=0)
    trainer = xpcnn.Trainer(model, xpcnn.optim.Adam(model, lr=2e-3), progress=False)
    trainer.fit(train[:3000], epochs=1, batch_size=64)
    trainer.extra_meta = {"dataset": name, "classes": list(datasets.dataset_info(name).classes)}
    return trainer.save(folder / f"{name}.npz")


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> tuple[Path, datasets.Split]:
    train, test = datasets.load("mnist-sample")
    return train_checkpoint(tmp_path_factory.mktemp("mnist"), "mnist-sample", train), test[:200]


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> tuple[Path, datasets.Split]:
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION} (apt-get install dataset-fashion-mnist)")
    train, test = datasets.load("fashion-mnist", download=False)
    return train_checkpoint(tmp_path_factory.mktemp("fashion"), "fashion-mnist", train), test[:200]


def save_pngs(folder: Path, images: np.ndarray, style: str) -> list[Path]:
    """Each image as a PNG: "raw" (the dataset's own pixels), "paper" (dark on light, enlarged 4x, as a scan)
    or "ink" (black ink on a transparent background: the pixels are the alpha channel)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, pixels in enumerate(images):
        if style == "raw":
            image = Image.fromarray(pixels)
        elif style == "paper":
            image = Image.fromarray(255 - pixels).resize((112, 112), Image.BICUBIC)
        else:
            rgba = np.zeros((*pixels.shape, 4), np.uint8)
            rgba[..., 3] = pixels
            image = Image.fromarray(rgba, "RGBA")
        paths.append(folder / f"{style}-{i:03d}.png")
        image.save(paths[-1])
    return paths


def predicted_classes(result: subprocess.CompletedProcess, classes: tuple[str, ...]) -> np.ndarray:
    """The class indices ``xpcnn predict`` printed, one line ``PATH: CLASS (P)`` per image."""
    assert result.returncode == 0, result.stderr
    names = [line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in result.stdout.splitlines()]
    return np.array([classes.index(name) for name in names])


@pytest.mark.parametrize("style, agreement", [("raw", 0.95), ("ink", 0.95), ("paper", 0.90)])
def test_mnist_pngs_agree_with_the_raw_arrays(mnist, tmp_path: Path, style: str, agreement: float) -> None:
    checkpoint, test = mnist
    trainer = xpcnn.Trainer(xpcnn.load(checkpoint), progress=False)
    expected = np.argmax(trainer.predict(test.images), axis=1)
    assert np.mean(expected == test.labels) > 0.8  # a model worth comparing
    paths = save_pngs(tmp_path, test.images, style)
    prepared = np.stack([load_image(path, digits=True) for path in paths])
    assert np.mean(np.argmax(trainer.predict(prepared), axis=1) == expected) >= agreement


def test_fashion_mnist_pngs_through_the_cli_agree_with_the_raw_arrays(fashion, tmp_path: Path) -> None:
    """The tester's case: Fashion-MNIST's own test images as PNG used to get 61.5% right (prepared as digits)."""
    checkpoint, test = fashion
    trainer = xpcnn.Trainer(xpcnn.load(checkpoint), progress=False)
    expected = np.argmax(trainer.predict(test.images), axis=1)
    assert np.mean(expected == test.labels) > 0.65
    paths = save_pngs(tmp_path / "raw", test.images, "raw")
    got = predicted_classes(run_cli("predict", str(checkpoint), *map(str, paths)),
                            datasets.dataset_info("fashion-mnist").classes)
    assert np.mean(got == expected) >= 0.95
    paper = save_pngs(tmp_path / "paper", test.images[:50], "paper")  # photographed on white: inverted back
    prepared = np.stack([load_image(path, digits=False) for path in paper])
    assert np.mean(np.argmax(trainer.predict(prepared), axis=1) == expected[:50]) >= 0.9


def test_fashion_mnist_pngs_are_only_resized() -> None:
    item = np.zeros((28, 28), np.uint8)
    item[2:26, 8:20] = 200  # a light item touching nothing, on black
    grey = item.astype(np.float32)
    np.testing.assert_array_equal(prepare(grey, digits=False), item)
    np.testing.assert_array_equal(prepare(255 - grey, digits=False), item)  # on white: inverted
    wide = np.zeros((28, 56), np.float32)
    assert prepare(wide, digits=False).shape == (28, 28)


def test_black_ink_on_transparency_is_composited_onto_white(mnist, tmp_path: Path) -> None:
    """The tester's drawn 0, RGBA and LA and a palette image with a transparent colour: black ink on transparent
    reads as black on white, the same image as on paper, and is classified as on paper."""
    checkpoint, test = mnist
    zero = test.images[int(np.argmax(test.labels == 0))]
    on_paper = tmp_path / "paper.png"
    Image.fromarray(255 - zero).save(on_paper)
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = zero
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    la = np.stack([np.zeros_like(zero), zero], axis=-1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    palette = Image.fromarray(np.where(zero > 127, 1, 0).astype(np.uint8), "P")
    palette.putpalette([255, 255, 255, 0, 0, 0])  # 0: white, transparent; 1: black ink
    palette.save(tmp_path / "palette.png", transparency=0)
    reference = read_grey(on_paper)
    for name in ("rgba.png", "la.png"):
        np.testing.assert_allclose(read_grey(tmp_path / name), reference, atol=0.5)
    assert float(read_grey(tmp_path / "palette.png")[0, 0]) == 255.0
    white_ink = rgba.copy()
    white_ink[..., :3] = 255
    Image.fromarray(white_ink, "RGBA").save(tmp_path / "white-ink.png")  # light ink: composited onto black
    np.testing.assert_allclose(read_grey(tmp_path / "white-ink.png"), zero, atol=0.5)
    paths = [str(tmp_path / n) for n in ("paper.png", "rgba.png", "la.png", "palette.png", "white-ink.png")]
    result = run_cli("predict", str(checkpoint), *paths)
    assert predicted_classes(result, tuple(str(d) for d in range(10))).tolist() == [0] * 5
    assert result.stderr == ""


def test_a_blank_image_is_answered_with_a_warning(mnist, tmp_path: Path) -> None:
    checkpoint, _ = mnist
    Image.new("L", (64, 64), 255).save(tmp_path / "white.png")
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(tmp_path / "clear.png")  # nothing drawn: white paper
    assert is_blank(read_grey(tmp_path / "white.png")) and is_blank(read_grey(tmp_path / "clear.png"))
    result = run_cli("predict", str(checkpoint), str(tmp_path / "white.png"), str(tmp_path / "clear.png"))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    warnings = result.stderr.splitlines()
    assert warnings == [f"xpcnn predict: warning: {tmp_path / 'white.png'} is blank (every pixel is 255): nothing "
                        "to classify, its answer means nothing",
                        f"xpcnn predict: warning: {tmp_path / 'clear.png'} is blank (every pixel is 255): nothing "
                        "to classify, its answer means nothing"]


def write_header_only_png(path: Path, width: int, height: int) -> None:
    """A PNG that declares ``width`` x ``height`` grey pixels (its data is never reached: Pillow refuses it first)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_in_one_line(mnist, tmp_path: Path) -> None:
    checkpoint, _ = mnist
    bomb = tmp_path / "huge.png"
    write_header_only_png(bomb, 20000, 20000)
    with pytest.raises(DataError, match=f"^{bomb}: the image is too large to read \\(20000x20000 = 400,000,000 "
                                        "pixels, more than the 89,478,485 pixels"):
        read_grey(bomb)
    write_header_only_png(bomb, 10000, 10000)  # over Pillow's warning limit, under its error limit: refused too
    with pytest.raises(DataError, match="10000x10000 = 100,000,000 pixels"):
        read_grey(bomb)
    write_header_only_png(bomb, 20000, 20000)
    result = run_cli("predict", str(checkpoint), str(bomb))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"xpcnn predict: error: {bomb}: the image is too large to read "
                                          "(20000x20000 = 400,000,000 pixels, more than the 89,478,485 pixels Pillow "
                                          "reads safely); scale it down, a few hundred pixels a side is plenty"]
