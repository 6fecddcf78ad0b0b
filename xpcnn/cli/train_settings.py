"""``xpcnn train``'s training settings: ``--schedule``, ``--step-size``, ``--gamma``, ``--weight-decay`` and
``--early-stopping``.

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

SCHEDULES = ("none", "step", "cosine")
DEFAULT_GAMMA = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the schedule, weight-decay and early-stopping flags to ``xpcnn train``'s parser."""
    parser.add_argument("--schedule", choices=SCHEDULES,
                        help="learning-rate schedule, stepped after each epoch: step (StepLR: times --gamma every "
                             "--step-size epochs) or cosine (CosineAnnealingLR from --lr to 0 over --epochs) "
                             "(default: none)")
    parser.add_argument("--step-size", type=positive_int, metavar="N",
                        help="with --schedule step: epochs between steps (default: a third of --epochs, at least 1)")
    parser.add_argument("--gamma", type=positive_float,
                        help=f"with --schedule step: the factor per step (default: {DEFAULT_GAMMA})")
    parser.add_argument("--weight-decay", type=non_negative_float, metavar="W",
                        help="L2 penalty for sgd and adam, decoupled weight decay for adamw "
                             "(default: 0, 0.01 for adamw)")
    parser.add_argument("--early-stopping", type=positive_int, metavar="N",
                        help="stop when val_loss has not improved for N epochs (default: train all --epochs)")


def settings(args: argparse.Namespace, checkpoint: Any = None) -> dict[str, Any]:
    """The run's settings, JSON-ready: ``schedule`` ("none", "step", "cosine"), ``step_size`` and ``gamma``
    (step), ``t_max`` (cosine), ``early_stopping`` (patience or None).

    A new run takes them from ``args``. A resumed run takes them from ``checkpoint`` (none for a checkpoint
    written before they existed); ``--early-stopping`` may change there, while a ``--schedule``, ``--step-size``,
    ``--gamma`` or ``--weight-decay`` that differs from the checkpoint's raises ValueError (one line).
    """
    if checkpoint is None:
        schedule = args.schedule or "none"
        if schedule != "step" and (args.step_size is not None or args.gamma is not None):
            flag = "--step-size" if args.step_size is not None else "--gamma"
            raise ValueError(f"{flag} applies to --schedule step only (this run's schedule: {schedule})")
        result: dict[str, Any] = {"schedule": schedule, "step_size": None, "gamma": None, "t_max": None,
                                  "early_stopping": args.early_stopping}
        if schedule == "step":
            result["step_size"] = args.step_size or max(1, args.epochs // 3)
            result["gamma"] = DEFAULT_GAMMA if args.gamma is None else args.gamma
        elif schedule == "cosine":
            result["t_max"] = args.epochs
        return result
    saved = dict(checkpoint.meta.get("training") or {})
    result = {"schedule": saved.get("schedule") or "none", "step_size": saved.get("step_size"),
              "gamma": saved.get("gamma"), "t_max": saved.get("t_max"), "early_stopping": saved.get("early_stopping")}
    hyper = checkpoint.meta.get("optimizer", {}).get("hyperparameters", {})
    given = {"--schedule": (args.schedule, result["schedule"]), "--step-size": (args.step_size, result["step_size"]),
             "--gamma": (args.gamma, result["gamma"]), "--weight-decay": (args.weight_decay, hyper.get("weight_decay"))}
    for flag, (value, recorded) in given.items():
        if value is not None and value != recorded:
            shown = "not set" if recorded is None else recorded
            raise ValueError(f"{flag} {value} differs from the run in {checkpoint.path} ({flag.lstrip('-')}: "
                             f"{shown}); a resumed run keeps its settings: drop {flag}, or start a new run")
    if result["schedule"] == "cosine" and result["t_max"] and args.epochs > result["t_max"]:
        raise ValueError(f"--epochs {args.epochs} goes past the cosine schedule in {checkpoint.path}, which ends "
                         f"at epoch {result['t_max']} (the rate would stay 0 after it); resume with --epochs "
                         f"{result['t_max']} at most, or start a new run")
    if args.early_stopping is not None:
        result["early_stopping"] = args.early_stopping
    return result


def build_schedule(run: dict[str, Any], optimizer: optim.Optimizer) -> optim.Schedule | None:
    """The schedule ``run`` (from :func:`settings`) names for ``optimizer``, or None."""
    if run["schedule"] == "step":
        return optim.StepLR(optimizer, step_size=int(run["step_size"]), gamma=float(run["gamma"]))
    if run["schedule"] == "cosine":
        return optim.CosineAnnealingLR(optimizer, t_max=int(run["t_max"]))
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
    if getattr(optimizer, "weight_decay", 0):
        parts.append(f"weight decay {optimizer.weight_decay:g}")
    if run["early_stopping"]:
        parts.append(f"early stopping after {_epochs(run['early_stopping'])} without a better val_loss")
    return "".join(", " + part for part in parts)


def _epochs(count: int) -> str:
    return "epoch" if count == 1 else f"{count} epochs"
