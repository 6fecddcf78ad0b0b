"""Helpers shared by the ``xpcnn`` subcommands: argument types, data loading, error reporting."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from xpcnn.checkpoint import load_checkpoint
from xpcnn.data import datasets, image_folder
from xpcnn.data.datasets import Split
from xpcnn.errors import XpcnnWarning


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (inf and nan are refused: no flag of xpcnn means them)."""
    return _float(text, zero_ok=False)


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _float(text, zero_ok=True)


def _float(text: str, zero_ok: bool) -> float:
    kind = "non-negative" if zero_ok else "positive"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {kind} number, got {text!r}") from None
    if not math.isfinite(value) or not (value >= 0 if zero_ok else value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite {kind} number, got {text}")
    return value


def add_data_arguments(parser: argparse.ArgumentParser, default_dataset: str | None = "mnist",
                       default_help: str = "%(default)s") -> None:
    """--dataset, --data-dir and --split-test-set; ``default_help`` describes a ``None`` default."""
    parser.add_argument("--dataset", default=default_dataset, choices=sorted(datasets.DATASETS),
                        help=f"dataset name (default: {default_help})")
    parser.add_argument("--data-dir", help="folder holding the dataset's files: IDX files, a CIFAR archive, or "
                                           "for image-folder one sub-folder of PNG/JPEG images per class")
    parser.add_argument("--split-test-set", type=positive_int, metavar="N",
                        help="use only the test files: train on their first N images, test on the rest "
                             "(for a folder that holds only t10k files)")
    parser.add_argument("--image-size", type=positive_int, metavar="S",
                        help=f"image-folder: resize images to SxS (default: {image_folder.DEFAULT_IMAGE_SIZE})")
    parser.add_argument("--channels", type=int, choices=(1, 3),
                        help=f"image-folder: 3 for RGB, 1 for grey (default: {image_folder.DEFAULT_CHANNELS})")
    parser.add_argument("--val-fraction", type=fraction, metavar="F",
                        help="image-folder without train/ and test/ sub-folders: the part of each class held out to "
                             f"test (default: {image_folder.DEFAULT_VAL_FRACTION})")


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


#: The data arguments of ``image-folder`` only: attribute -> (flag, default).
IMAGE_FOLDER_OPTIONS = {"image_size": ("--image-size", image_folder.DEFAULT_IMAGE_SIZE),
                        "channels": ("--channels", image_folder.DEFAULT_CHANNELS),
                        "val_fraction": ("--val-fraction", image_folder.DEFAULT_VAL_FRACTION)}


def image_folder_options(args: Any) -> dict[str, Any]:
    """The options :func:`xpcnn.data.datasets.load` takes for ``args.dataset``: for image-folder, its size,
    channels, fraction (defaults filled in) and seed; none for another dataset. Raises ValueError (one line)
    for an image-folder flag given with another dataset."""
    if args.dataset != "image-folder":
        given = [flag for key, (flag, _) in IMAGE_FOLDER_OPTIONS.items() if getattr(args, key, None) is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --dataset "
                             f"image-folder only, not to --dataset {args.dataset}; drop {given[0]}")
        return {}
    options = {key: getattr(args, key, None) if getattr(args, key, None) is not None else default
               for key, (_, default) in IMAGE_FOLDER_OPTIONS.items()}
    return {**options, "seed": getattr(args, "seed", None) or 0}


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--backend", choices=["numpy", "cupy", "torch", "jax", "array_api_strict"],
                        help="array library (default: numpy on cpu, cupy on cuda)")


def choose_dataset(args: Any) -> None:
    """Fill in ``args.dataset`` when no data argument names one: a resumed run's checkpoint's dataset; MNIST
    for --data-dir or --split-test-set; otherwise full MNIST when it is here or can be downloaded, else the
    bundled sample, saying so in one line on stderr (what happened, and how to get the full set)."""
    if args.dataset is not None:
        return
    if getattr(args, "resume", None):
        args.dataset = load_checkpoint(args.resume).meta.get("dataset")
        if args.dataset in datasets.DATASETS:
            return
    if args.data_dir is not None or args.split_test_set:
        args.dataset = "mnist"
        return
    args.dataset, why_not = datasets.mnist_or_sample()
    if why_not is not None:
        train, test = datasets.DATASETS[args.dataset].split or (0, 0)
        command = getattr(args, "command", None) or "train"
        print(f"xpcnn {command}: full MNIST is not on this machine and its download failed ({why_not}); training "
              f"on the bundled sample instead: --dataset {args.dataset}, {train:,} train / {test:,} test MNIST digits. "
              "For full MNIST, run again with network access, or put its four IDX files in a folder and pass "
              "--data-dir DIR", file=sys.stderr)


def load_splits(args: Any) -> tuple[Split, Split]:
    """(train, test) as the data arguments say; ValueError for --split-test-set on a dataset already split or
    larger than the test files, on image-folder (split by --val-fraction or its train/ and test/ folders), and
    for an image-folder flag with another dataset."""
    options = image_folder_options(args)
    if args.split_test_set and args.dataset == "image-folder":
        raise ValueError("--dataset image-folder is split by --val-fraction, or by train/ and test/ sub-folders of "
                         "--data-dir; drop --split-test-set")
    if args.split_test_set and datasets.dataset_info(args.dataset).split is not None:
        train, test = datasets.dataset_info(args.dataset).split  # type: ignore[misc]
        raise ValueError(f"--dataset {args.dataset} is already split ({train:,} train / {test:,} test images); "
                         "drop --split-test-set")
    if args.split_test_set:
        test = datasets.load_test_only(args.dataset, args.data_dir)
        if args.split_test_set >= len(test):
            raise ValueError(f"--split-test-set {args.split_test_set} leaves no test images "
                             f"(the test files hold {len(test)})")
        return test.take(0, args.split_test_set), test.take(args.split_test_set)
    return datasets.load(args.dataset, args.data_dir, **options)


@contextlib.contextmanager
def one_line_warnings(prefix: str) -> Iterator[None]:
    """Inside the block, each of xpcnn's warnings (:class:`~xpcnn.errors.XpcnnWarning`) prints as one line on
    stderr, ``"<prefix>: warning: <message>"``, without Python's file and source line; others as Python prints
    them, except NumPy's floating-point warnings (overflow, invalid value), which a diverging run would print
    before its one-line error. Python's warning display is restored when the block ends."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
            if issubclass(category, XpcnnWarning):
                print(f"{prefix}: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        # NumPy's overflow/invalid-value warnings during training: the divergence check reports them in one line
        warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
        yield
