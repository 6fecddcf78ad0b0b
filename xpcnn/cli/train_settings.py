"""``xpcnn train``'s training settings: ``--schedule``, ``--step-size``, ``--gamma``, ``--warmup-epochs``,
``--weight-decay``, ``--nesterov``, ``--label-smoothing`` and ``--early-stopping``.

``--schedule warmup-cosine`` and ``--schedule onecycle`` step once per batch (as the CIFAR-10 speed runs do): their
length, ``total_steps``, is ``--epochs`` times the batches per epoch, recorded with the run.

Values are checked as arguments (finite, in range: one clear line otherwise). A run records its settings in
the checkpoint header under ``"training"``, next to ``"optimizer"`` (whose hyper-parameters hold the weight
decay) and the schedule's progress (``"schedule"``); ``--resume`` takes them back from there, so a resumed run
continues with the same schedule, weight decay and early stopping.
"""

from __future__ import annotations

import argparse
from typing import Any

from xpcnn import optim
from xpcnn.cli.common import non_negative_float, positive_float, positive_int
from xpcnn.training import EarlyStopping

SCHEDULES = ("none", "step", "cosine", "warmup-cosine", "onecycle")
#: The schedules stepped once per batch.
PER_BATCH = ("warmup-cosine", "onecycle")
DEFAULT_GAMMA = 0.1
DEFAULT_WARMUP_EPOCHS = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the schedule, weight-decay and early-stopping flags to ``xpcnn train``'s parser."""
    parser.add_argument("--schedule", choices=SCHEDULES,
                        help="learning-rate schedule: step (StepLR: times --gamma every --step-size epochs), cosine "
                             "(CosineAnnealingLR from --lr to 0 over --epochs), both stepped per epoch; warmup-cosine "
                             "(linear warm-up from --lr/10 over --warmup-epochs, then cosine to 0) or onecycle "
                             "(PyTorch's OneCycleLR up to --lr; with sgd it cycles the momentum 0.95-0.85-0.95), both "
                             "stepped per batch (default: none)")
    parser.add_argument("--step-size", type=positive_int, metavar="N",
                        help="with --schedule step: epochs between steps (default: a third of --epochs, at least 1)")
    parser.add_argument("--gamma", type=positive_float,
                        help=f"with --schedule step: the factor per step (default: {DEFAULT_GAMMA})")
    parser.add_argument("--warmup-epochs", type=positive_int, metavar="N",
                        help=f"with --schedule warmup-cosine: warm-up epochs (default: {DEFAULT_WARMUP_EPOCHS}); with "
                             "onecycle: epochs of rising rate (pct_start N/--epochs; default: 0.3 of the run)")
    parser.add_argument("--nesterov", action="store_true", default=None,
                        help="Nesterov momentum for --optimizer sgd (PyTorch's formula)")
    parser.add_argument("--label-smoothing", type=_smoothing, metavar="EPS",
                        help="label smoothing of the training loss, in [0, 1] (PyTorch's; default: 0)")
    parser.add_argument("--weight-decay", type=non_negative_float, metavar="W",
                        help="L2 penalty for sgd and adam, decoupled weight decay for adamw "
                             "(default: 0, 0.01 for adamw)")
    parser.add_argument("--early-stopping", type=positive_int, metavar="N",
                        help="stop when val_loss has not improved for N epochs (default: train all --epochs)")


def _smoothing(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


#: The recorded settings and their values when a run (or an older checkpoint) does not set them.
KEYS = {"schedule": "none", "step_size": None, "gamma": None, "t_max": None, "warmup_epochs": None,
        "warmup_steps": None, "total_steps": None, "pct_start": None, "label_smoothing": 0.0, "early_stopping": None}


def settings(args: argparse.Namespace, checkpoint: Any = None, batches_per_epoch: int | None = None) -> dict[str, Any]:
    """The run's settings, JSON-ready: ``schedule`` (one of :data:`SCHEDULES`), ``step_size`` and ``gamma``
    (step), ``t_max`` (cosine), ``warmup_epochs``, ``warmup_steps`` and ``total_steps`` (warmup-cosine),
    ``total_steps`` and ``pct_start`` (onecycle), ``label_smoothing`` and ``early_stopping`` (patience or None).
    ``batches_per_epoch`` sizes the per-batch schedules.

    A new run takes them from ``args``. A resumed run takes them from ``checkpoint`` (none for a checkpoint
    written before they existed); ``--early-stopping`` may change there, while a ``--schedule``, ``--step-size``,
    ``--gamma``, ``--warmup-epochs``, ``--label-smoothing``, ``--nesterov`` or ``--weight-decay`` that differs from
    the checkpoint's raises ValueError (one line), as does ``--epochs`` past the end of a cosine, warmup-cosine or
    onecycle schedule.
    """
    if checkpoint is None:
        schedule = args.schedule or "none"
        if schedule != "step" and (args.step_size is not None or args.gamma is not None):
            flag = "--step-size" if args.step_size is not None else "--gamma"
            raise ValueError(f"{flag} applies to --schedule step only (this run's schedule: {schedule})")
        if schedule not in PER_BATCH and args.warmup_epochs is not None:
            raise ValueError(f"--warmup-epochs applies to --schedule warmup-cosine and onecycle only (this run's "
                             f"schedule: {schedule})")
        result: dict[str, Any] = {**KEYS, "schedule": schedule, "early_stopping": args.early_stopping,
                                  "label_smoothing": args.label_smoothing or 0.0}
        if schedule == "step":
            result["step_size"] = args.step_size or max(1, args.epochs // 3)
            result["gamma"] = DEFAULT_GAMMA if args.gamma is None else args.gamma
        elif schedule == "cosine":
            result["t_max"] = args.epochs
        elif schedule in PER_BATCH:
            result["total_steps"] = args.epochs * int(batches_per_epoch or 1)
            warmup = args.warmup_epochs
            if warmup is not None and warmup >= args.epochs:
                raise ValueError(f"--warmup-epochs {warmup} must be below --epochs {args.epochs} (the schedule "
                                 "decays after the warm-up)")
            if schedule == "warmup-cosine":
                result["warmup_epochs"] = DEFAULT_WARMUP_EPOCHS if warmup is None else warmup
                if result["warmup_epochs"] >= args.epochs:
                    raise ValueError(f"--schedule warmup-cosine warms up for {result['warmup_epochs']} epoch(s): "
                                     f"pass --epochs {result['warmup_epochs'] + 1} or more, or --schedule onecycle")
                result["warmup_steps"] = result["warmup_epochs"] * int(batches_per_epoch or 1)
            else:
                result["warmup_epochs"] = warmup
                result["pct_start"] = 0.3 if warmup is None else warmup / args.epochs
        return result
    saved = dict(checkpoint.meta.get("training") or {})
    result = {key: saved.get(key, default) for key, default in KEYS.items()}
    result["schedule"] = result["schedule"] or "none"
    result["label_smoothing"] = result["label_smoothing"] or 0.0
    hyper = checkpoint.meta.get("optimizer", {}).get("hyperparameters", {})
    given = {"--schedule": (args.schedule, result["schedule"]), "--step-size": (args.step_size, result["step_size"]),
             "--gamma": (args.gamma, result["gamma"]), "--weight-decay": (args.weight_decay, hyper.get("weight_decay")),
             "--warmup-epochs": (args.warmup_epochs, result["warmup_epochs"]),
             "--label-smoothing": (args.label_smoothing, result["label_smoothing"]),
             "--nesterov": (args.nesterov, hyper.get("nesterov", False))}
    for flag, (value, recorded) in given.items():
        if value is not None and value != recorded:
            shown = "not set" if recorded is None else recorded
            shown_flag = flag if value is True else f"{flag} {value}"
            raise ValueError(f"{shown_flag} differs from the run in {checkpoint.path} ({flag.lstrip('-')}: "
                             f"{shown}); a resumed run keeps its settings: drop {flag}, or start a new run")
    if result["schedule"] == "cosine" and result["t_max"] and args.epochs > result["t_max"]:
        raise ValueError(f"--epochs {args.epochs} goes past the cosine schedule in {checkpoint.path}, which ends "
                         f"at epoch {result['t_max']} (the rate would stay 0 after it); resume with --epochs "
                         f"{result['t_max']} at most, or start a new run")
    if result["schedule"] in PER_BATCH and result["total_steps"] and batches_per_epoch \
            and args.epochs * batches_per_epoch > result["total_steps"]:
        last = result["total_steps"] // batches_per_epoch
        raise ValueError(f"--epochs {args.epochs} goes past the {result['schedule']} schedule in {checkpoint.path}, "
                         f"which ends after step {result['total_steps']} (epoch {last}); resume with --epochs {last} "
                         "at most, or start a new run")
    if args.early_stopping is not None:
        result["early_stopping"] = args.early_stopping
    return result


def build_schedule(run: dict[str, Any], optimizer: optim.Optimizer) -> optim.Schedule | None:
    """The schedule ``run`` (from :func:`settings`) names for ``optimizer``, or None."""
    if run["schedule"] == "step":
        return optim.StepLR(optimizer, step_size=int(run["step_size"]), gamma=float(run["gamma"]))
    if run["schedule"] == "cosine":
        return optim.CosineAnnealingLR(optimizer, t_max=int(run["t_max"]))
    if run["schedule"] == "warmup-cosine":
        return optim.WarmupCosineLR(optimizer, warmup_steps=int(run["warmup_steps"]),
                                    total_steps=int(run["total_steps"]))
    if run["schedule"] == "onecycle":
        return optim.OneCycleLR(optimizer, total_steps=int(run["total_steps"]), pct_start=float(run["pct_start"]))
    return None


def build_early_stopping(run: dict[str, Any]) -> EarlyStopping | None:
    """An :class:`EarlyStopping` on val_loss with ``run``'s patience, or None."""
    return EarlyStopping("val_loss", patience=int(run["early_stopping"])) if run["early_stopping"] else None


def describe(run: dict[str, Any], optimizer: optim.Optimizer) -> str:
    """The settings for the run's first line: ``", StepLR every 3 epochs x0.1, weight decay 0.0001"``."""
    parts = []
    if run["schedule"] == "step":
        parts.append(f"StepLR every {_epochs(run['step_size'])} x{run['gamma']:g}")
    elif run["schedule"] == "cosine":
        parts.append(f"CosineAnnealingLR over {_epochs(run['t_max'])}")
    elif run["schedule"] == "warmup-cosine":
        parts.append(f"WarmupCosineLR over {run['total_steps']:,} steps ({_epochs(run['warmup_epochs'])} of warm-up)")
    elif run["schedule"] == "onecycle":
        parts.append(f"OneCycleLR over {run['total_steps']:,} steps (pct_start {run['pct_start']:g})")
    if getattr(optimizer, "nesterov", False):
        parts.append("Nesterov momentum")
    if getattr(optimizer, "weight_decay", 0):
        parts.append(f"weight decay {optimizer.weight_decay:g}")
    if run.get("label_smoothing"):
        parts.append(f"label smoothing {run['label_smoothing']:g}")
    if run["early_stopping"]:
        parts.append(f"early stopping after {_epochs(run['early_stopping'])} without a better val_loss")
    return "".join(", " + part for part in parts)


def _epochs(count: int) -> str:
    return "epoch" if count == 1 else f"{count} epochs"
