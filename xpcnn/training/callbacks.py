"""Callbacks run by :class:`xpcnn.training.Trainer` at the end of each epoch."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xpcnn import strict_json

if TYPE_CHECKING:
    from xpcnn.training.trainer import Trainer


def format_epoch(record: dict[str, Any], epochs: int | None = None) -> str:
    """The one line that sums up an epoch's ``record`` (as :meth:`Trainer.fit` returns them), e.g.
    ``epoch 3/10: loss 0.1234, accuracy 0.9650, 4903 img/s, 12.3 s | val_loss 0.0800, val_accuracy 0.9750``,
    plus ``| lr 0.001`` when a schedule set the rate. ``epochs`` (the total) is shown after the epoch's number."""
    line = (f"epoch {record['epoch']}{f'/{epochs}' if epochs else ''}: loss {record['loss']:.4f}, "
            f"accuracy {record['accuracy']:.4f}, {record['images_per_s']:.0f} img/s")
    if "seconds" in record:
        line += f", {record['seconds']:.1f} s"
    if "val_loss" in record:
        line += f" | val_loss {record['val_loss']:.4f}, val_accuracy {record['val_accuracy']:.4f}"
    if "lr" in record:
        line += f" | lr {record['lr']:.4g}"
    return line


class Callback:
    """Base class; override the hooks you need."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """When :meth:`Trainer.fit` starts (``trainer.history`` holds the epochs of a resumed run)."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After each epoch, with that epoch's metrics."""

    def on_interrupt(self, trainer: Trainer) -> None:
        """When training stops early on Ctrl-C (the model holds the last finished step)."""


class ModelCheckpoint(Callback):
    """Save ``last.npz`` after every epoch (and on Ctrl-C), and ``best.npz`` when ``monitor`` improves."""

    def __init__(self, directory: str | os.PathLike, monitor: str = "val_accuracy", mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"ModelCheckpoint: mode must be 'max' or 'min', got {mode!r}")
        self.directory, self.monitor, self.mode = Path(directory), monitor, mode
        self.best: float | None = None

    @property
    def last_path(self) -> Path:
        return self.directory / "last.npz"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.npz"

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        trainer.save(self.last_path)
        if self.best is None and self.best_path.is_file():  # a resumed run: best.npz holds the earlier epochs' best
            self.best = self._best_of(trainer.history[:-1])
        value = record.get(self.monitor)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = value
            trainer.save(self.best_path)

    def on_interrupt(self, trainer: Trainer) -> None:
        trainer.save(self.last_path)

    def _best_of(self, records: list[dict[str, Any]]) -> float | None:
        values = [r[self.monitor] for r in records
                  if isinstance(r.get(self.monitor), (int, float)) and not math.isnan(r[self.monitor])]
        if not values:
            return None
        return max(values) if self.mode == "max" else min(values)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    A resumed run goes on counting: at the start of :meth:`Trainer.fit` the callback replays the epochs
    already in ``trainer.history``, and stops at once if they had run out of patience. After a stop,
    ``stopped_epoch`` is the last epoch trained, ``best`` and ``best_epoch`` the best value and its epoch,
    and :meth:`message` says so in one line.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0, mode: str = "min") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"EarlyStopping: mode must be 'max' or 'min', got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience <= 0:
            raise ValueError(f"EarlyStopping: patience must be a positive int, got {patience!r}")
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, min_delta, mode
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.waited = 0
        self.stopped_epoch: int | None = None

    def on_train_begin(self, trainer: Trainer) -> None:
        self.best, self.best_epoch, self.waited, self.stopped_epoch = None, None, 0, None
        for record in trainer.history:
            self._see(record)
        if self.waited >= self.patience:
            self.stopped_epoch = trainer.epoch
            trainer.stop_training = True

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._see(record)
        if self.waited >= self.patience:
            self.stopped_epoch = record.get("epoch", trainer.epoch)
            trainer.stop_training = True

    def _see(self, record: dict[str, Any]) -> None:
        value = record.get(self.monitor)
        if value is None:
            return
        better = (self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                        else value > self.best + self.min_delta))
        if better:
            self.best, self.best_epoch, self.waited = value, record.get("epoch"), 0
        else:
            self.waited += 1

    def message(self) -> str | None:
        """One line on why training stopped, or None if this callback did not stop it."""
        if self.stopped_epoch is None:
            return None
        best = f"{self.best:.4f}" if isinstance(self.best, float) else str(self.best)
        waited = "1 epoch" if self.waited == 1 else f"{self.waited} epochs"
        return (f"early stopping: {self.monitor} has not improved for {waited} "
                f"(best {best} at epoch {self.best_epoch}); stopped after epoch {self.stopped_epoch}")


class HistoryLogger(Callback):
    """Append each epoch's record as one line of strict JSON to ``path`` (a non-finite value is ``null``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(strict_json.dumps(record) + "\n")


class EpochSummary(Callback):
    """Print :func:`format_epoch`'s line for each epoch to stderr. ``Trainer.fit(verbose=1 or 2)`` prints the
    same line itself; this callback is for ``verbose=0`` runs that still want it."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        import sys
        print(format_epoch(record), file=sys.stderr, flush=True)
