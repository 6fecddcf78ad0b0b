"""``xpcnn train``: train a preset on a dataset, writing checkpoints, history and plots into --out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from xpcnn import models, optim, strict_json
from xpcnn.checkpoint import load_checkpoint
from xpcnn.cli import augment_settings, outputs, run_config, train_settings
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
from xpcnn.data.datasets import Split
from xpcnn.distributed.sharding import Shard, num_steps
from xpcnn.errors import CheckpointError, ShapeError, XpcnnError
from xpcnn.layers import Dense
from xpcnn.losses import SoftmaxCrossEntropy
from xpcnn.model import Sequential
from xpcnn.training import HistoryLogger, ModelCheckpoint, Trainer, TrainingInterrupted, plots
from xpcnn.training.trainer import dataset_normalization, model_takes

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
    augment_settings.add_argument(p)
    p.add_argument("--seed", type=int, help="weights, shuffling, dropout and augmentation seed (default: 0)")
    p.add_argument("--limit-train", type=positive_int, metavar="N", help="train on the first N images only")
    p.add_argument("--out", type=Path,
                   help="output folder (default: runs/<model>-<dataset>; on --resume: the checkpoint's folder)")
    p.add_argument("--resume", type=Path, metavar="CKPT",
                   help="continue the run in a checkpoint (e.g. OUT/last.npz) with its recorded settings")
    p.add_argument("--force", action="store_true",
                   help="start afresh in an --out that holds another run's files (they are deleted)")
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


def _run(args: argparse.Namespace, comm: Any = None) -> int:
    if comm is None:
        run = _setup(args)
    else:  # every rank sets up alone, then they compare: a mistake that every rank makes is printed once
        from xpcnn.distributed.failures import agree_on_setup
        run = agree_on_setup(comm, lambda: _setup(args, comm))
    return 0 if run is None else _train(args, run, comm)


def _setup(args: argparse.Namespace, comm: Any = None) -> SimpleNamespace | None:
    """Everything before the first step: the run's configuration, the output folder (its lock held by the
    result), the data, model, optimizer and trainer; None when a resumed run has nothing left to do."""
    main_rank = comm is None or comm.is_main  # prints and writes
    checkpoint = load_checkpoint(args.resume) if args.resume else None
    if checkpoint is not None:
        config, notes = run_config.resumed_run(args, checkpoint)
        out = args.out or checkpoint.path.parent
    else:
        choose_dataset(args)
        out = args.out or Path("runs") / f"{args.model or run_config.FLAGS['model'][1]}-{args.dataset}"
        config, notes = run_config.new_run(args, out), []
    lock = _lock_output_folder(out) if main_rank else None  # held (in the result) until the run ends
    if main_rank:
        outputs.prepare(out, resume_from=checkpoint, force=args.force)
    train, test = load_splits(args)
    if args.limit_train:
        train = train.take(0, args.limit_train)
    info = datasets.dataset_info(args.dataset)
    ranks = Shard(comm.rank, comm.size) if comm is not None else None  # per-batch schedules count this rank's steps
    batches_per_epoch = num_steps(len(train), args.batch_size, ranks)
    opt_cls, default_lr = OPTIMIZERS[args.optimizer] if args.optimizer in OPTIMIZERS else (None, None)
    if checkpoint is not None:
        model = checkpoint.build_model()
        if opt_cls is None:
            raise CheckpointError(f"{args.resume} holds state of an unknown optimizer {args.optimizer!r}; "
                                  f"xpcnn resumes {', '.join(OPTIMIZERS)}")
        hyper = dict(checkpoint.meta.get("optimizer", {}).get("hyperparameters", {}))
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])
        if not hyper.get("lr"):  # a cosine schedule ends at 0, which no optimizer takes: build it at the run's
            hyper["lr"] = config["lr"] or (checkpoint.meta.get("schedule") or {}).get("base_lr")  # (restored next)
        optimizer = opt_cls(model, **hyper)
        run_settings = train_settings.settings(args, checkpoint, batches_per_epoch)
        run_settings["augment"] = augment_settings.settings(args, train, info, checkpoint)
    else:
        run_settings = train_settings.settings(args, batches_per_epoch=batches_per_epoch)
        run_settings["augment"] = augment_settings.settings(args, train, info)
        num_classes, shape = len(train.classes or info.classes), {}
        if models.takes_shape(args.model):
            c, h, w = image_shape(train.images.shape)
            shape = {"in_channels": c, "image_size": (h, w), "num_classes": num_classes}
        model = _fitted_head(models.build(args.model, seed=args.seed, **shape), num_classes, args.seed)
        if args.nesterov and opt_cls is not optim.SGD:
            raise ValueError(f"--nesterov applies to --optimizer sgd only (this run's optimizer: {args.optimizer})")
        extra = {"momentum": args.momentum, "nesterov": bool(args.nesterov)} if opt_cls is optim.SGD else {}
        if args.weight_decay is not None:
            extra["weight_decay"] = args.weight_decay
        args.lr = config["lr"] = args.lr or default_lr
        optimizer = opt_cls(model, lr=args.lr, **extra)
    config["out"] = str(out.resolve())
    _check_input(model, train, args)
    classes = list(train.classes or info.classes)
    trainer = Trainer(model, optimizer, SoftmaxCrossEntropy(label_smoothing=run_settings["label_smoothing"]),
                      device=args.device, backend=args.backend, seed=args.seed,
                      normalization=dataset_normalization(train), progress=not args.no_progress,
                      schedule=train_settings.build_schedule(run_settings, optimizer), distributed=comm or False,
                      augment=augment_settings.build(run_settings["augment"], train, info))
    trainer.extra_meta = {"dataset": args.dataset, "classes": classes, "run": config, "training": run_settings,
                          "image_shape": list(image_shape(train.images.shape))}  # --resume and predict read them
    stopper = train_settings.build_early_stopping(run_settings)
    if checkpoint is not None:
        trainer.restore(checkpoint)
        if main_rank:
            outputs.adopt(out, checkpoint)  # repairs a history that a kill cut short, even if nothing is left to do
        if trainer.epoch >= args.epochs:
            if main_rank:
                more = (f"pass --epochs {trainer.epoch + 1} or more to train on"
                        if run_settings["schedule"] != "cosine" else
                        "its cosine schedule has reached 0, so it cannot train on: start a new run to train longer")
                print(f"nothing to do: the run in {args.resume} has finished {trainer.epoch} of its {args.epochs} "
                      f"epoch(s); {more}", file=sys.stderr)
            return None
    return SimpleNamespace(lock=lock, checkpoint=checkpoint, notes=notes, out=out, train=train, test=test, info=info,
                           model=model, optimizer=optimizer, run_settings=run_settings, trainer=trainer,
                           stopper=stopper)


def _train(args: argparse.Namespace, run: SimpleNamespace, comm: Any = None) -> int:
    """Train the run :func:`_setup` prepared, evaluate it, and (on rank 0) write its plots."""
    trainer, out, train, test, stopper = run.trainer, run.out, run.train, run.test, run.stopper
    model, optimizer, run_settings = run.model, run.optimizer, run.run_settings
    info, checkpoint = run.info, run.checkpoint
    if comm is not None and not comm.is_main:
        trainer.fit(train, test, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
        trainer.evaluate(test)  # its collectives: rank 0 reports
        return 0
    for note in run.notes:
        print(note, file=sys.stderr)
    resumed = f", resumed at epoch {trainer.epoch + 1}" + (f" batch {trainer.batch_in_epoch + 1}"
                                                           if trainer.batch_in_epoch else "") if checkpoint else ""
    print(f"training {model.name or args.model} on {args.dataset} ({len(train)} train / {len(test)} test images) "
          f"with {trainer.placement}, {type(optimizer).__name__} lr={_rate(trainer, optimizer)}"
          f"{train_settings.describe(run_settings, optimizer)}{augment_settings.describe(run_settings['augment'])}"
          f", {_batch(args.batch_size, comm)}, into {out}{resumed}",
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
        plots.plot_recall(result["per_class_recall"], trainer.extra_meta["classes"], out / "recall.png",
                     model=model.name or args.model, dataset=args.dataset)
        written += ["history.png", "recall.png"]
    print(f"wrote {', '.join(written)} in {out}" + ("" if plots.matplotlib_available() else
          "; for PNG plots: pip install 'xpcnn[plots]'"), file=sys.stderr)
    return 0


def _batch(size: int, comm: Any) -> str:
    """``batch size 32``, or in a data-parallel run ``batch size 32 per rank x 4 ranks = 128 global``."""
    ranks = getattr(comm, "size", 1)
    return f"batch size {size}" + (f" per rank x {ranks} ranks = {size * ranks} global" if ranks > 1 else "")


def _first_channels(model: Sequential) -> int | None:
    """The channel count ``model``'s first layer with one takes (before any Dense layer), or None."""
    for layer in model.layers:
        expected = getattr(layer, "in_channels", getattr(layer, "num_features", None))
        if expected is not None or hasattr(layer, "in_features"):
            return expected
    return None


def _rate(trainer: Trainer, optimizer: Any) -> str:
    """The learning rate for the run's first line: a schedule's peak rate (a warm-up starts lower) with the
    rate now in brackets where they differ, else the optimizer's rate; 4 significant digits."""
    peak, now = getattr(trainer.schedule, "base_lr", None), optimizer.lr
    if peak is None or f"{peak:.4g}" == f"{now:.4g}":
        return f"{now:.4g}"
    return f"{peak:.4g} (now {now:.4g})"


def _fitted_head(model: Sequential, num_classes: int, seed: int) -> Sequential:
    """``model``, or, when it ends in a Dense layer with another number of outputs than the dataset's
    ``num_classes`` (image-folder's own classes), the model with that layer drawn anew for ``num_classes``
    outputs (from the seed the presets give it, ``(seed, its index)``). Raises :class:`ShapeError` when it has
    another number of outputs and no Dense
    layer to end it."""
    last = model.layers[-1]
    if getattr(last, "out_features", num_classes) == num_classes:
        return model
    if not isinstance(last, Dense):
        raise ShapeError(f"--model {model.name} ends in {type(last).__name__}, not a Dense layer to fit the "
                         f"dataset's {num_classes} classes")
    head = Dense(**{**last.config(), "out_features": num_classes}, seed=(seed, len(model.layers) - 1))
    return Sequential([*model.layers[:-1], head], name=model.name)


def _check_input(model: Sequential, train: Split, args: argparse.Namespace) -> None:
    """Raise :class:`ShapeError` in one line, before training, when the preset does not take the dataset's
    images: another channel count (naming the presets that take the dataset's, and image-folder's --channels)
    or, for image-folder, another size (naming the --image-size that fits)."""
    c, h, w = image_shape(train.images.shape)
    takes = _first_channels(model)
    folder = args.dataset == "image-folder"
    name = args.model or model.name
    if takes is not None and takes != c:
        fits = [preset for preset in sorted(models.PRESETS) if _first_channels(models.build(preset)) == c]
        choices = f"pass --model {' or '.join(fits)}" if fits else f"no preset takes {c} channels yet"
        raise ShapeError(f"--model {name} takes {takes}-channel images, but --dataset {args.dataset} has {c}-channel "
                         f"images ({c}, {h}, {w}); {choices}" + (f", or pass --channels {takes}" if folder else ""))
    if folder and not model_takes(model, (1, c, h, w)):
        sizes = [s for s in (28, 32, *range(1, 513)) if model_takes(model, (1, c, s, s))][:1]
        fix = f"pass --image-size {sizes[0]}" if sizes else "no image size fits it"
        raise ShapeError(f"--model {name} does not take {h}x{w} images (--image-size {h}); {fix}")


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

