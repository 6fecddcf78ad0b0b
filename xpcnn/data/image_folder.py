"""``image-folder``: a user's own images, one sub-folder of PNG/JPEG files per class, as torchvision's
``ImageFolder`` reads them (``DIR/cat/001.png``, ``DIR/dog/xyz.jpg``, ...; classes sorted by folder name, files
found in sub-folders of a class folder too, other files and hidden ones skipped).

Each image is decoded by Pillow, converted to RGB or grey and resized to ``image_size`` x ``image_size``
(:func:`xpcnn.data.images.read_photo`). When the folder holds ``train/`` and ``test/`` sub-folders (each with
its class folders), they are the two splits; otherwise each class's images are divided by a seeded permutation,
``val_fraction`` of them (rounded, at least one of a class of two or more, never all) to test. The images are
normalized with their own per-channel statistics (the Trainer computes them from the training split).
"""

from __future__ import annotations

import os
from pathlib import Path

from xpcnn import backend as B
from xpcnn.backend import host
from xpcnn.data.datasets import Split
from xpcnn.data.images import read_photo
from xpcnn.errors import DataError

#: The files read, by extension (case-insensitive), as torchvision's ImageFolder would among its own.
EXTENSIONS = (".png", ".jpg", ".jpeg")
#: ``--image-size`` by default: CIFAR's 32x32, the input of xpcnn's colour presets.
DEFAULT_IMAGE_SIZE = 32
#: ``--channels`` by default: RGB.
DEFAULT_CHANNELS = 3
#: ``--val-fraction`` by default: a fifth of each class's images held out to test.
DEFAULT_VAL_FRACTION = 0.2


def class_folders(root: Path) -> list[Path]:
    """The class folders of ``root``: its sub-folders, hidden ones skipped, sorted by name."""
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def image_files(folder: Path) -> list[Path]:
    """The PNG/JPEG files under ``folder`` (sub-folders too, links followed), hidden ones skipped, sorted."""
    found = []
    for current, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(current) / f for f in files if f.lower().endswith(EXTENSIONS) and not f.startswith(".")]
    return sorted(found)


def scan(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """``(classes, [(file, label), ...])`` of the class folders in ``root``; ``classes`` given (a test folder's),
    each folder must be one of them. Raises :class:`DataError` naming the folder: no class folders, a class
    folder without images, a class the training folder lacks."""
    folders = class_folders(root)
    if not folders:
        raise DataError(f"{root} has no class folders: image-folder takes a folder with one sub-folder of PNG/JPEG "
                        f"images per class ({root / 'cat' / '1.png'}, {root / 'dog' / '2.jpg'}, ...)")
    names = [f.name for f in folders]
    if classes is not None:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise DataError(f"{root / unknown[0]}: class {unknown[0]!r} is not among the training folder's "
                            f"classes ({', '.join(classes)}); give train/ and test/ the same class folders")
    samples = []
    for folder in folders:
        files = image_files(folder)
        if not files:
            raise DataError(f"{folder}: class folder without PNG/JPEG files ({', '.join(EXTENSIONS)}); add its "
                            "images or remove the folder")
        label = (classes or names).index(folder.name)
        samples += [(f, label) for f in files]
    return classes or names, samples


def load(data_dir: str | os.PathLike | None, image_size: int = DEFAULT_IMAGE_SIZE, channels: int = DEFAULT_CHANNELS,
         val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0) -> tuple[Split, Split]:
    """``(train, test)`` of the images in ``data_dir`` (see the module docstring): images
    ``(N, channels, image_size, image_size)`` uint8, labels ``(N,)`` int64, ``dataset="image-folder"``, the
    folder in ``files`` and the class names in ``classes``.

    Raises :class:`DataError` in one line: no ``data_dir``, not a folder, no class folders or an empty one
    (naming it), a file Pillow cannot read (naming it), no image left to test; ValueError for an
    ``image_size`` below 1, ``channels`` other than 1 or 3, or a ``val_fraction`` outside (0, 1).
    """
    if data_dir is None:
        raise DataError("--dataset image-folder reads your own images: pass --data-dir DIR, a folder with one "
                        "sub-folder of PNG/JPEG images per class")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"--data-dir {root} not found: no such folder; pass the folder that holds one sub-folder "
                        "of PNG/JPEG images per class")
    if not isinstance(image_size, int) or image_size < 1 or channels not in (1, 3):
        raise ValueError(f"image-folder: image_size must be a positive int and channels 1 or 3, got {image_size!r} "
                         f"and {channels!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"image-folder: val_fraction must be between 0 and 1, got {val_fraction}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, train = scan(root / "train")
        test = scan(root / "test", classes)[1]
    else:
        classes, samples = scan(root)
        train, test = _divided(samples, len(classes), val_fraction, seed)
        if not test:
            raise DataError(f"{root}: too few images to hold any out for testing (every class has one); add images, "
                            "or give it train/ and test/ sub-folders")
    return (_split(train, root, classes, image_size, channels), _split(test, root, classes, image_size, channels))


def _divided(samples: list[tuple[Path, int]], num_classes: int, val_fraction: float, seed: int
             ) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """``samples`` divided into (train, test): of each class, a seeded permutation's first ``round(n *
    val_fraction)`` (at least 1 when n >= 2, at most n - 1) to test."""
    train, test = [], []
    for label in range(num_classes):
        own = [s for s in samples if s[1] == label]
        n = len(own)
        count = min(max(round(n * val_fraction), 1 if n >= 2 else 0), n - 1)
        order = [int(i) for i in B.random.permutation_host(n, seed, label)]
        held = set(order[:count])
        test += [s for i, s in enumerate(own) if i in held]
        train += [s for i, s in enumerate(own) if i not in held]
    return train, test


def _split(samples: list[tuple[Path, int]], root: Path, classes: list[str], size: int, channels: int) -> Split:
    xp = host.xp
    images = xp.stack([read_photo(path, size, channels) for path, _ in samples])
    labels = xp.asarray([label for _, label in samples], dtype=xp.int64)
    return Split(images, labels, "image-folder", (root,), tuple(classes))
