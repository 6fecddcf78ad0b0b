"""``xpcnn train``: train a preset on a dataset, writing checkpoints, history and plots into --out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xpcnn import models, optim
from xpcnn.checkpoint import load_checkpoint
from xpcnn.cli import train_settings
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
from xpcnn.errors import CheckpointError, XpcnnError
from xpcnn.training import HistoryLogger, ModelCheckpoint, Trainer, TrainingInterrupted, plots

OPTIMIZERS = {"sgd": (optim.SGD, 0.01), "adam": (optim.Adam, 1e-3), "adamw": (optim.AdamW, 1e-3)}
OUTPUTS = ("last.npz", "best.npz", "history.jsonl")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a CNN (with no arguments: seed-deep on MNIST)",
                       description="Train a preset CNN. Writes last.npz, best.npz, history.jsonl and PNG plots "
                                   "into --out.")
    p.add_argument("--model", default="seed-deep", choices=sorted(models.PRESETS), help="preset (default: %(default)s)")
    add_data_arguments(p, default_dataset=None,
                       default_help="mnist when it is here or can be downloaded, else the bundled mnist-sample")
    add_device_arguments(p)
    p.add_argument("--epochs", type=positive_int, default=3, help="total epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="default: %(default)s")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam", help="default: %(default)s")
    p.add_argument("--lr", type=positive_float,
                   help="learning rate (default: 0.01 for sgd, 0.001 for adam/adamw)")
    p.add_argument("--momentum", type=non_negative_float, default=0.9,
                   help="SGD momentum (default: %(default)s)")
    train_settings.add_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="weights, shuffling and dropout seed (default: %(default)s)")
    p.add_argument("--limit-train", type=positive_int, metavar="N", help="train on the first N images only")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<model>-<dataset>)")
    p.add_argument("--resume", type=Path, metavar="CKPT", help="continue from a checkpoint (e.g. OUT/last.npz)")
    p.add_argument("--force", action="store_true", help="overwrite the checkpoints and history already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of an MPI job: mpiexec -n K xpcnn train --distributed ... "
                        "(--batch-size is per rank; only rank 0 writes into --out)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "distributed", False):
        return _run(args)
    from xpcnn.distributed import init
    from xpcnn.distributed.failures import run_or_abort
    comm = init()
    return run_or_abort(comm, "xpcnn train", lambda: _run(args, comm))  # one rank fails: every rank stops


def _run(args: argparse.Namespace, comm: object = None) -> int:
    main_rank = comm is None or comm.is_main  # type: ignore[attr-defined]  # prints and writes
    choose_dataset(args)
    out = args.out or Path("runs") / f"{args.model}-{args.dataset}"
    lock = _lock_output_folder(out) if main_rank else None  # noqa: F841 - held until this run ends, however it ends
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not (args.resume or args.force) and main_rank:
        raise XpcnnError(f"{out} already holds {', '.join(existing)}; pass --resume {out / 'last.npz'} to "
                         "continue, --force to overwrite, or another --out")
    checkpoint = load_checkpoint(args.resume) if args.resume else None
    train, test = load_splits(args)
    if args.limit_train:
        train = train.take(0, args.limit_train)
    info = datasets.dataset_info(args.dataset)
    if checkpoint is not None:
        model = checkpoint.build_model()
        opt_name = checkpoint.meta.get("optimizer", {}).get("type", "Adam").lower()
        if opt_name not in OPTIMIZERS:
            raise CheckpointError(f"{args.resume} holds state of an unknown optimizer {opt_name!r}; "
                                  f"xpcnn resumes {', '.join(OPTIMIZERS)}")
        opt_cls, _ = OPTIMIZERS[opt_name]
        hyper = dict(checkpoint.meta.get("optimizer", {}).get("hyperparameters", {}))
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])
        optimizer = opt_cls(model, **hyper)
        seed = checkpoint.meta.get("trainer", {}).get("seed", args.seed)
        run_settings = train_settings.settings(args, checkpoint)
    else:
        run_settings = train_settings.settings(args)
        model = models.build(args.model, seed=args.seed)
        opt_cls, default_lr = OPTIMIZERS[args.optimizer]
        extra = {"momentum": args.momentum} if opt_cls is optim.SGD else {}
        if args.weight_decay is not None:
            extra["weight_decay"] = args.weight_decay
        optimizer = opt_cls(model, lr=args.lr or default_lr, **extra)
        seed = args.seed
    trainer = Trainer(model, optimizer, device=args.device, backend=args.backend, seed=seed,
                      normalization=(info.mean, info.std), progress=not args.no_progress,
                      schedule=train_settings.build_schedule(run_settings, optimizer), distributed=comm or False)
    trainer.extra_meta = {"dataset": args.dataset, "classes": list(info.classes)}
    trainer.extra_meta["training"] = run_settings  # next to the optimizer's; --resume takes them back
    stopper = train_settings.build_early_stopping(run_settings)
    if checkpoint is not None:
        trainer.restore(checkpoint)
        if trainer.epoch >= args.epochs:
            if main_rank:
                print(f"{args.resume} has finished {trainer.epoch} epoch(s), so --epochs {args.epochs} leaves "
                      f"nothing to train; pass --epochs {trainer.epoch + 1} or more to continue", file=sys.stderr)
            return 0
    if not main_rank:
        trainer.fit(train, test, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
        trainer.evaluate(test)  # its collectives: rank 0 reports
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if args.force and not args.resume:
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
    print(f"training {model.name or args.model} on {args.dataset} ({len(train)} train / {len(test)} test images) "
          f"with {trainer.placement}, {type(optimizer).__name__} lr={optimizer.lr}"
          f"{train_settings.describe(run_settings, optimizer)}", file=sys.stderr)
    epochs_before = trainer.epoch
    try:
        trainer.fit(train, test, epochs=args.epochs, batch_size=args.batch_size,
                    callbacks=[ModelCheckpoint(out), HistoryLogger(out / "history.jsonl"), *filter(None, [stopper])],
                    verbose=2 if args.no_progress else 1)
    except TrainingInterrupted:
        print(f"\ninterrupted: progress saved to {out / 'last.npz'}; continue with "
              f"xpcnn train --resume {out / 'last.npz'} --out {out} --epochs {args.epochs}", file=sys.stderr)
        return 130
    if stopper is not None and stopper.message():
        print(stopper.message() + f" of {args.epochs}" + ("" if trainer.epoch > epochs_before else
              f"; nothing left to resume: pass --early-stopping N above {stopper.patience} to train on"),
              file=sys.stderr)
    result = trainer.evaluate(test)
    print(json.dumps({"test_accuracy": result["accuracy"], "test_loss": result["loss"],
                      "per_class_recall": [round(r, 4) for r in result["per_class_recall"]]}))
    if plots.matplotlib_available():
        plots.plot_history(trainer.history, out / "history.png", model=model.name or args.model, dataset=args.dataset)
        plots.plot_recall(result["per_class_recall"], info.classes, out / "recall.png", model=model.name or args.model,
                          dataset=args.dataset)
        print(f"wrote {out / 'last.npz'}, {out / 'best.npz'}, {out / 'history.jsonl'}, history.png, recall.png",
              file=sys.stderr)
    else:
        print(f"wrote {out / 'last.npz'}, {out / 'best.npz'}, {out / 'history.jsonl'}; "
              "for PNG plots: pip install 'xpcnn[plots]'", file=sys.stderr)
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
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / ".xpcnn-train.lock", "a+")  # noqa: SIM115 - kept open: the lock lives with it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise XpcnnError(f"another xpcnn train is writing into {out}; wait for it to finish, or pass another "
                         "--out") from None
    return handle

