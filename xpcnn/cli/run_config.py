"""``xpcnn train``'s run configuration: recorded in every checkpoint, taken back by ``--resume``.

A run is what its first command said: model, data (dataset, folder, ``--split-test-set``, ``--limit-train``;
image-folder's ``--image-size``, ``--channels`` and ``--val-fraction``),
batch size, optimizer and its rate, seed, epochs and output folder. Each checkpoint's header records it under
``"run"``. ``--resume CKPT`` needs no other flag: it takes the run from there. A flag that names something
else is an error (the run would no longer be the one its history describes); the flags that are safe to change
are announced instead: ``--epochs`` (train on, or stop sooner), ``--data-dir`` (the same files in another
folder), ``--device``, ``--backend`` and ``--no-progress``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from xpcnn.cli.common import IMAGE_FOLDER_OPTIONS

#: The run's settings: key in the header -> (flag, default for a new run).
FLAGS: dict[str, tuple[str, Any]] = {
    "model": ("--model", "seed-deep"),
    "dataset": ("--dataset", None),
    "split_test_set": ("--split-test-set", None),
    "limit_train": ("--limit-train", None),
    "batch_size": ("--batch-size", 32),
    "optimizer": ("--optimizer", "adam"),
    "lr": ("--lr", None),
    "momentum": ("--momentum", 0.9),
    "seed": ("--seed", 0),
    "epochs": ("--epochs", 3),
    "image_size": ("--image-size", None),     # image-folder's: filled in for it, None for other datasets
    "channels": ("--channels", None),
    "val_fraction": ("--val-fraction", None),
}
#: Settings a resumed run may change (with a note on stderr).
CHANGEABLE = ("epochs", "data_dir")


def new_run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The configuration of a new run: ``args`` with the defaults filled in (``args`` is updated too)."""
    run = {key: getattr(args, key) if getattr(args, key) is not None else default
           for key, (_, default) in FLAGS.items()}
    if run["dataset"] == "image-folder":  # its options' defaults are part of the run; other datasets have none
        run.update({key: default if run[key] is None else run[key]
                    for key, (_, default) in IMAGE_FOLDER_OPTIONS.items()})
    run["data_dir"] = str(Path(args.data_dir).resolve()) if args.data_dir else None
    run["out"] = str(out.resolve())
    _apply(args, run)
    return run


def resumed_run(args: argparse.Namespace, checkpoint: Any) -> tuple[dict[str, Any], list[str]]:
    """The configuration recorded in ``checkpoint`` (its header's ``"run"``), and the notes to print about the
    safe changes ``args`` makes to it; ``args`` is updated to match.

    Raises ValueError (one line naming the flag, both values and the fix) for a flag that differs from the run.
    A checkpoint written before runs were recorded gives what its header holds (dataset, optimizer, rate, seed)
    and takes the rest from ``args``.
    """
    recorded = checkpoint.meta.get("run")
    if not isinstance(recorded, dict):
        return _legacy_run(args, checkpoint), []
    run = {key: recorded.get(key, default) for key, (_, default) in FLAGS.items()}
    run["data_dir"], run["out"] = recorded.get("data_dir"), recorded.get("out")
    for key, (flag, _) in FLAGS.items():
        given = getattr(args, key)
        if key in CHANGEABLE or given is None or given == run[key]:
            continue
        shown = "not set" if run[key] is None else run[key]
        raise ValueError(f"{flag} {given} differs from the run in {checkpoint.path} ({key.replace('_', '-')}: "
                         f"{shown}); a resumed run keeps its settings: drop {flag}, or start a new run with "
                         "another --out")
    notes = []
    if args.epochs is not None and args.epochs != run["epochs"]:
        notes.append(f"--epochs {args.epochs}: this run now ends after epoch {args.epochs} "
                     f"(it was started for {run['epochs']})")
        run["epochs"] = args.epochs
    if args.data_dir is not None and str(Path(args.data_dir).resolve()) != run["data_dir"]:
        notes.append(f"--data-dir {args.data_dir}: reading the data from there (the run started with "
                     f"{run['data_dir'] or 'the default folders'})")
        run["data_dir"] = str(Path(args.data_dir).resolve())
    elif run["data_dir"] is not None and not Path(run["data_dir"]).is_dir():
        raise ValueError(f"the run in {checkpoint.path} read its data from {run['data_dir']}, which is not a folder "
                         "any more; pass --data-dir with the folder that holds those files now")
    _apply(args, run)
    return run, notes


def _legacy_run(args: argparse.Namespace, checkpoint: Any) -> dict[str, Any]:
    meta = checkpoint.meta
    optimizer = meta.get("optimizer") if isinstance(meta.get("optimizer"), dict) else {}
    hyper = optimizer.get("hyperparameters") if isinstance(optimizer.get("hyperparameters"), dict) else {}
    trainer = meta.get("trainer") if isinstance(meta.get("trainer"), dict) else {}
    run = {key: getattr(args, key) if getattr(args, key) is not None else default
           for key, (_, default) in FLAGS.items()}
    run.update(dataset=meta.get("dataset", run["dataset"]),
               optimizer=str(optimizer.get("type", run["optimizer"])).lower(),
               lr=hyper.get("lr", run["lr"]), seed=trainer.get("seed", run["seed"]))
    run["model"] = (meta.get("model_config") or {}).get("name") or run["model"]
    run["data_dir"] = str(Path(args.data_dir).resolve()) if args.data_dir else None
    run["out"] = None
    _apply(args, run)
    return run


def _apply(args: argparse.Namespace, run: dict[str, Any]) -> None:
    for key in FLAGS:
        setattr(args, key, run[key])
    args.data_dir = run["data_dir"]


def command(out: Path) -> str:
    """The command that continues the run in ``out``."""
    return f"xpcnn train --resume {out / 'last.npz'}"
