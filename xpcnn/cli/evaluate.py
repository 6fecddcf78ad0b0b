"""``xpcnn evaluate`` and ``xpcnn predict``: use a saved checkpoint."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

from xpcnn import strict_json
from xpcnn.backend import host
from xpcnn.checkpoint import load_checkpoint
from xpcnn.cli.common import IMAGE_FOLDER_OPTIONS, add_data_arguments, add_device_arguments, load_splits
from xpcnn.data import datasets
from xpcnn.data.datasets import Split
from xpcnn.data.image_folder import DEFAULT_VAL_FRACTION
from xpcnn.data.images import is_blank, prepare, read_grey, read_photo
from xpcnn.errors import DataWarning
from xpcnn.training import Trainer


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, loss and per-class recall of a checkpoint on a test set")
    p.add_argument("checkpoint", type=Path, metavar="CKPT")
    add_data_arguments(p, default_dataset=None, default_help="the checkpoint's")
    add_device_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_evaluate)

    p = sub.add_parser("predict", help="classify PNG/JPEG images with a checkpoint")
    p.add_argument("checkpoint", type=Path, metavar="CKPT")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    add_device_arguments(p)
    p.set_defaults(run=run_predict)


def _input_shape(checkpoint: Any, model: Any, info: datasets.DatasetInfo | None) -> tuple[int, int]:
    """``(channels, size)`` of the images the checkpoint's model was trained on: its header's ``image_shape``
    (written by ``xpcnn train``), else the model's first layer's channels at CIFAR's 32 or MNIST's 28."""
    recorded = checkpoint.meta.get("image_shape")
    if isinstance(recorded, list) and len(recorded) == 3:
        return int(recorded[0]), int(recorded[1])
    channels = next((layer.in_channels for layer in model.layers if hasattr(layer, "in_channels")), 1)
    return channels, 32 if info is not None and info.kind == "cifar" else 28


def _trainer(path: Path, args: argparse.Namespace):
    checkpoint = load_checkpoint(path)
    model = checkpoint.build_model()  # with the normalization it was trained with (a model file's too)
    trainer = Trainer(model, device=args.device, backend=args.backend, progress=False)
    return trainer, checkpoint


def run_evaluate(args: argparse.Namespace) -> int:
    trainer, checkpoint = _trainer(args.checkpoint, args)
    test, which = _held_out(args, checkpoint)
    result = trainer.evaluate(test)
    if args.json:
        print(strict_json.dumps({"accuracy": result["accuracy"], "loss": result["loss"],
                          "per_class_recall": result["per_class_recall"],
                          "per_class_precision": result["per_class_precision"],
                          "confusion_matrix": result["confusion_matrix"], "dataset": args.dataset,
                          "images": len(test), "which": which}))
        return 0
    classes = test.classes or checkpoint.meta.get("classes") or datasets.dataset_info(args.dataset).classes
    print(f"{args.dataset} {which}, {len(test)} images: accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}")
    for name, recall in zip(classes, result["per_class_recall"]):
        print(f"  {name:>12}  recall {recall:.4f}")
    return 0


def _held_out(args: argparse.Namespace, checkpoint: Any) -> tuple[Split, str]:
    """The images to score and a phrase saying which they are. By default those the checkpoint's run held out:
    its dataset's test set, or, for a run trained with ``--split-test-set N``, the test files' images from N on
    (the first N were its training images). ``--dataset``, ``--data-dir`` or ``--split-test-set`` choose others."""
    run = checkpoint.meta.get("run") if isinstance(checkpoint.meta.get("run"), dict) else {}
    chosen = args.dataset is not None or args.split_test_set is not None
    args.dataset = args.dataset or checkpoint.meta.get("dataset") or "mnist"
    if not chosen and run.get("dataset") == args.dataset:
        args.split_test_set = run.get("split_test_set")
        if args.data_dir is None:
            args.data_dir = run.get("data_dir")
    if args.dataset == "image-folder":
        for key in IMAGE_FOLDER_OPTIONS:  # the run's size, channels and division, unless given
            if getattr(args, key, None) is None:
                setattr(args, key, run.get(key))
        args.seed = run.get("seed", 0)
        if args.data_dir is None:
            args.data_dir = run.get("data_dir")
        test = load_splits(args)[1]
        divided = not (Path(args.data_dir) / "train").is_dir() or not (Path(args.data_dir) / "test").is_dir()
        return test, (f"held-out images (--val-fraction {args.val_fraction or DEFAULT_VAL_FRACTION}, seed "
                      f"{args.seed})" if divided else "test/ folder")
    if args.split_test_set:
        test = load_splits(args)[1]
        first, last = args.split_test_set, args.split_test_set + len(test) - 1
        held = "" if chosen else f", held out from training by the run's --split-test-set {args.split_test_set}"
        return test, f"test files' images {first:,}-{last:,}{held}"
    info = datasets.dataset_info(args.dataset)
    test = datasets.load_test_only(args.dataset, args.data_dir)
    if info.split is not None:
        return test, f"held-out images {info.split[0]:,}-{sum(info.split) - 1:,}"
    return test, "test set"


def run_predict(args: argparse.Namespace) -> int:
    """Classify each image as the checkpoint's dataset's images were prepared (its ``dataset``: MNIST-style
    digits are centred by mass, Fashion-MNIST's items inverted to light on dark and resized, photographs
    (CIFAR, image-folder) converted to the model's channels, RGB or grey, and resized to the training images'
    size; a checkpoint without a dataset: digits); a blank image is answered with a one-line warning on stderr."""
    trainer, checkpoint = _trainer(args.checkpoint, args)
    dataset = checkpoint.meta.get("dataset")
    info = datasets.DATASETS.get(dataset) if isinstance(dataset, str) else None
    digits = info.digits if info is not None else True
    photos = info is not None and info.kind != "idx"
    channels, size = _input_shape(checkpoint, trainer.model, info)
    images = []
    for path in args.images:
        pixels = read_photo(path, size, channels) if photos else read_grey(path)
        if is_blank(pixels):
            warnings.warn(f"{path} is blank (every pixel is {float(pixels.reshape(-1)[0]):g}): nothing to classify, "
                          "its answer means nothing", DataWarning, stacklevel=1)
        images.append(pixels if photos else prepare(pixels, digits, size))
    probabilities = trainer.predict(host.xp.stack(images))
    classes = checkpoint.meta.get("classes") or [str(i) for i in range(probabilities.shape[1])]
    for path, row in zip(args.images, probabilities):
        best = int(host.xp.argmax(row))
        print(f"{path}: {classes[best]} ({float(row[best]):.3f})")
    return 0
