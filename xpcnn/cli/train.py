"""``xpcnn train``: train a preset on a dataset, writing checkpoints, history and plots into --out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xpcnn import models, optim, strict_json
from xpcnn.checkpoint import load_checkpoint
from xpcnn.cli import outputs, run_config, train_settings
from xpcnn.cli.common import (
    add_data_arguments,
    add_device_arguments,
    choose_dataset,
    load_splits,
    non_negative_float,
    positive_float,
    positive_int,
)
from xpcnn.data import datasets
from xpcnn.data.batches import image_shape
from xpcnn.errors import CheckpointError, XpcnnError
from xpcnn.losses import SoftmaxCrossEntropy
from xpcnn.training import HistoryLogger, ModelCheckpoint, Trainer, TrainingInterrupted, plots

OPTIMIZERS = {"sgd": (optim.SGD, 0.01), "adam": (optim.Adam, 1e-3), "adamw": (optim.AdamW, 1e-3)}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a CNN (with no arguments: seed-deep on MNIST)",
                       description="Train a preset CNN. Writes last.npz, best.npz, history.jsonl and PNG plots "
                                   "into --out. --resume CKPT continues a run with the settings it was started "
                                   "with (recorded in the checkpoint).")
    p.add_argument("--model", choices=sorted(models.PRESETS),
                   help="preset (default: seed-deep); resnet20 and fastnet are built for the dataset's channels, "
                        "image size and classes")
    add_data_arguments(p, default_dataset=None,
                       default_help="mnist when it is here or can be downloaded, else the bundled mnist-sample")
    add_device_arguments(p)
    p.add_argument("--epochs", type=positive_int, help="total epochs (default: 3; on --resume: the run's)")
    p.add_argument("--batch-size", type=positive_int, help="default: 32")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="default: adam")
    p.add_argument("--lr", type=positive_float,
                   help="learning rate (default: 0.01 for sgd, 0.001 for adam/adamw)")
    p.add_argument("--momentum", type=non_negative_float, help="SGD momentum (default: 0.9)")
    train_settings.add_arguments(p)
    p.add_argument("--seed", type=int, help="weights, shuffling and dropout seed (default: 0)")
    p.add_argument("--limit-train", type=positive_int, metavar="N", help="train on the first N images only")
    p.add_argument("--out", type=Path,
                   help="output folder (default: runs/<model>-<dataset>; on --resume: the checkpoint's folder)")
    p.add_argument("--resume", type=Path, metavar="CKPT",
                   help="continue the run in a checkpoint (e.g. OUT/last.npz) with its recorded settings")
    p.add_argument("--force", action="store_true",
                   help="start afresh in an --out that holds another run's files (they are deleted)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    checkpoint = load_checkpoint(args.resume) if args.resume else None
    if checkpoint is not None:
        config, notes = run_config.resumed_run(args, checkpoint)
        out = args.out or checkpoint.path.parent
    else:
        choose_dataset(args)
        out = args.out or Path("runs") / f"{args.model or run_config.FLAGS['model'][1]}-{args.dataset}"
        config, notes = run_config.new_run(args, out), []
    lock = _lock_output_folder(out)  # noqa: F841 - held until this run ends, however it ends
    outputs.prepare(out, resume_from=checkpoint, force=args.force)
    train, test = load_splits(args)
    if args.limit_train:
        train = train.take(0, args.limit_train)
    info = datasets.dataset_info(args.dataset)
    batches_per_epoch = -(-len(train) // args.batch_size)
    opt_cls, default_lr = OPTIMIZERS[args.optimizer] if args.optimizer in OPTIMIZERS else (None, None)
    if checkpoint is not None:
        model = checkpoint.build_model()
        if opt_cls is None:
            raise CheckpointError(f"{args.resume} holds state of an unknown optimizer {args.optimizer!r}; "
                                  f"xpcnn resumes {', '.join(OPTIMIZERS)}")
        hyper = dict(checkpoint.meta.get("optimizer", {}).get("hyperparameters", {}))
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])
        optimizer = opt_cls(model, **hyper)
        run_settings = train_settings.settings(args, checkpoint, batches_per_epoch)
    else:
        run_settings = train_settings.settings(args, batches_per_epoch=batches_per_epoch)
        shape = {}
        if models.takes_shape(args.model):
            c, h, w = image_shape(train.images.shape)
            shape = {"in_channels": c, "image_size": (h, w), "num_classes": len(info.classes)}
        model = models.build(args.model, seed=args.seed, **shape)
        if args.nesterov and opt_cls is not optim.SGD:
            raise ValueError(f"--nesterov applies to --optimizer sgd only (this run's optimizer: {args.optimizer})")
        extra = {"momentum": args.momentum, "nesterov": bool(args.nesterov)} if opt_cls is optim.SGD else {}
        if args.weight_decay is not None:
            extra["weight_decay"] = args.weight_decay
        args.lr = config["lr"] = args.lr or default_lr
        optimizer = opt_cls(model, lr=args.lr, **extra)
    config["out"] = str(out.resolve())
    trainer = Trainer(model, optimizer, SoftmaxCrossEntropy(label_smoothing=run_settings["label_smoothing"]),
                      device=args.device, backend=args.backend, seed=args.seed,
                      normalization=(info.mean, info.std), progress=not args.no_progress,
                      schedule=train_settings.build_schedule(run_settings, optimizer))
    trainer.extra_meta = {"dataset": args.dataset, "classes": list(info.classes), "run": config,
                          "training": run_settings}  # next to the optimizer's; --resume takes them back
    stopper = train_settings.build_early_stopping(run_settings)
    if checkpoint is not None:
        trainer.restore(checkpoint)
        outputs.adopt(out, checkpoint)  # repairs a history that a kill cut short, even if nothing is left to do
        if trainer.epoch >= args.epochs:
            print(f"nothing to do: the run in {args.resume} has finished {trainer.epoch} of its {args.epochs} "
                  f"epoch(s); pass --epochs {trainer.epoch + 1} or more to train on", file=sys.stderr)
            return 0
    for note in notes:
        print(note, file=sys.stderr)
    resumed = f", resumed at epoch {trainer.epoch + 1}" + (f" batch {trainer.batch_in_epoch + 1}"
                                                           if trainer.batch_in_epoch else "") if checkpoint else ""
    print(f"training {model.name or args.model} on {args.dataset} ({len(train)} train / {len(test)} test images) "
          f"with {trainer.placement}, {type(optimizer).__name__} lr={optimizer.lr}"
          f"{train_settings.describe(run_settings, optimizer)}, batch size {args.batch_size}, into {out}{resumed}",
          file=sys.stderr)
    epochs_before = trainer.epoch
    try:
        trainer.fit(train, test, epochs=args.epochs, batch_size=args.batch_size,
                    callbacks=[ModelCheckpoint(out), HistoryLogger(out / "history.jsonl"), *filter(None, [stopper])],
                    verbose=2 if args.no_progress else 1)
    except TrainingInterrupted:
        print(f"\ninterrupted: progress saved to {out / 'last.npz'}; continue with {run_config.command(out)}",
              file=sys.stderr)
        return 130
    if stopper is not None and stopper.message():
        print(stopper.message() + f" of {args.epochs}" + ("" if trainer.epoch > epochs_before else
              f"; nothing left to resume: pass --early-stopping N above {stopper.patience} to train on"),
              file=sys.stderr)
    result = trainer.evaluate(test)
    print(strict_json.dumps({"test_accuracy": result["accuracy"], "test_loss": result["loss"],
                      "per_class_recall": [round(r, 4) for r in result["per_class_recall"]]}))
    written = [name for name in ("last.npz", "best.npz", "history.jsonl") if (out / name).is_file()]
    if plots.matplotlib_available():
        plots.plot_history(trainer.history, out / "history.png", model=model.name or args.model,
                     dataset=args.dataset)
        plots.plot_recall(result["per_class_recall"], info.classes, out / "recall.png",
                     model=model.name or args.model, dataset=args.dataset)
        written += ["history.png", "recall.png"]
    print(f"wrote {', '.join(written)} in {out}" + ("" if plots.matplotlib_available() else
          "; for PNG plots: pip install 'xpcnn[plots]'"), file=sys.stderr)
    return 0


def _lock_output_folder(out: Path) -> object:
    """An exclusive lock on ``out`` (a hidden lock file in it, created with the folder), held while the returned
    object lives: a second ``xpcnn train`` into the same folder gets a clear error instead of interleaving its
    checkpoints and history with the first's. The operating system releases it when the process ends (a kill
    included). Where ``fcntl`` is missing (Windows), no lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    if out.exists() and not out.is_dir():
        raise XpcnnError(f"--out {out} is a file, not a folder; pass a folder for the run's files")
    out.mkdir(parents=True, exist_ok=True)
    try:
        handle = open(out / ".xpcnn-train.lock", "a+")  # noqa: SIM115 - kept open: the lock lives with it
    except PermissionError:
        raise XpcnnError(f"cannot write into {out} (permission denied); pass another --out") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise XpcnnError(f"another xpcnn train is writing into {out}; wait for it to finish, or pass another "
                         "--out") from None
    return handle

