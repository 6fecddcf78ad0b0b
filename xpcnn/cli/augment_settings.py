"""``xpcnn train --augment``: the flag, what a checkpoint records of it, and the augmentation it builds.

``--augment`` alone is the "default" policy: a random crop after zero padding by 4 pixels (2 for images under 32
pixels, such as 28x28 Fashion-MNIST) and a horizontal flip, or the crop alone on handwritten digits (mnist,
mnist-sample), where a mirrored image is another digit or none: ``--augment flip`` is refused there. Other
policies (:func:`xpcnn.data.augment.policy`): parts joined by "+" from ``crop[:P]``, ``crop-reflect[:P]``,
``flip`` and ``cutout[:S]``, or "none".

A run records the policy with every default filled in (``"crop:4+flip"``) in the checkpoint header's
``"training"`` section, under ``"augment"``; ``--resume`` takes it from there, so a resumed run draws the same
crops and flips (they depend on seed, epoch and batch only). A ``--augment`` that resolves to another policy is
refused on ``--resume``; a checkpoint written before augmentation existed resumes without it.
"""

from __future__ import annotations

import argparse
from typing import Any

from xpcnn.data import augment
from xpcnn.data.batches import image_shape
from xpcnn.data.datasets import DatasetInfo, Split


def _policy_text(text: str) -> str:
    try:
        augment.parse_policy(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip().lower()


def add_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--augment [POLICY]`` to ``xpcnn train``'s parser."""
    parser.add_argument("--augment", nargs="?", const="default", type=_policy_text, metavar="POLICY",
                        help="augment training batches on the device; alone: random crop with padding 4 (2 under "
                             "32x32) and horizontal flip (crop only on digits). POLICY: parts joined by '+' from "
                             "crop[:P], crop-reflect[:P], flip, cutout[:S], e.g. crop:4+flip+cutout:8 "
                             "(default: none)")


def settings(args: argparse.Namespace, train: Split, info: DatasetInfo, checkpoint: Any = None) -> str:
    """The run's policy, resolved for ``train``'s images (:func:`xpcnn.data.augment.resolve_policy`): from
    ``args.augment`` for a new run, from ``checkpoint`` ("none" for one written before augmentation existed)
    when resuming. Raises ValueError (one line) for flip on digits and for a ``--augment`` that differs from the
    checkpoint's; :class:`~xpcnn.errors.ShapeError` for reflect padding too wide for the images.
    """
    _, height, width = image_shape(train.images.shape)
    given = None if args.augment is None else augment.resolve_policy(args.augment, height, width, info.digits)
    if checkpoint is None:
        return given or "none"
    recorded = (checkpoint.meta.get("training") or {}).get("augment") or "none"
    if given is not None and given != recorded:
        raise ValueError(f"--augment {args.augment} ({given}) differs from the run in {checkpoint.path} (augment: "
                         f"{recorded}); a resumed run keeps its settings: drop --augment, or start a new run")
    return recorded


def build(text: str, train: Split, info: DatasetInfo) -> augment.Compose | None:
    """The augmentation of policy ``text`` for ``train``'s images of dataset ``info``, or None for "none"."""
    _, height, width = image_shape(train.images.shape)
    return augment.policy(text, height, width, info.digits)


def describe(text: str) -> str:
    """The policy for the run's first line: ``", augment crop:4+flip"``, or nothing for "none"."""
    return "" if text == "none" else f", augment {text}"
