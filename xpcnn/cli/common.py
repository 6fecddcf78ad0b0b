"""Helpers shared by the ``xpcnn`` subcommands: argument types, data loading, error reporting."""

from __future__ import annotations

import argparse
from typing import Any

from xpcnn.data import datasets
from xpcnn.data.datasets import Split


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def positive_float(text: str) -> float:
    return _float(text, zero_ok=False)


def non_negative_float(text: str) -> float:
    return _float(text, zero_ok=True)


def _float(text: str, zero_ok: bool) -> float:
    kind = "non-negative" if zero_ok else "positive"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {kind} number, got {text!r}") from None
    if not (value >= 0 if zero_ok else value > 0):
        raise argparse.ArgumentTypeError(f"must be {kind}, got {text}")
    return value


def add_data_arguments(parser: argparse.ArgumentParser, default_dataset: str | None = "mnist") -> None:
    parser.add_argument("--dataset", default=default_dataset, choices=sorted(datasets.DATASETS),
                        help="dataset name (default: %(default)s)")
    parser.add_argument("--data-dir", help="folder holding the dataset's IDX files (searched first)")
    parser.add_argument("--split-test-set", type=positive_int, metavar="N",
                        help="use only the test files: train on their first N images, test on the rest "
                             "(for a folder that holds only t10k files)")


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--backend", choices=["numpy", "cupy", "torch", "jax", "array_api_strict"],
                        help="array library (default: numpy on cpu, cupy on cuda)")


def load_splits(args: Any) -> tuple[Split, Split]:
    """(train, test) as the data arguments say."""
    if args.split_test_set:
        test = datasets.load_test_only(args.dataset, args.data_dir)
        if args.split_test_set >= len(test):
            raise ValueError(f"--split-test-set {args.split_test_set} leaves no test images "
                             f"(the test files hold {len(test)})")
        return test.take(0, args.split_test_set), test.take(args.split_test_set)
    return datasets.load(args.dataset, args.data_dir)
