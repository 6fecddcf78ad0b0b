"""Callbacks run by :class:`xpcnn.training.Trainer` at the end of each epoch."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xpcnn.training.trainer import Trainer


class Callback:
    """Base class; override the hooks you need."""

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
        if self.best is None:  # a resumed run: best.npz already holds the best of the earlier epochs
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
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0, mode: str = "min") -> None:
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, min_delta, mode
        self.best: float | None = None
        self.waited = 0

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        value = record.get(self.monitor)
        if value is None:
            return
        better = (self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                        else value > self.best + self.min_delta))
        if better:
            self.best, self.waited = value, 0
        else:
            self.waited += 1
            if self.waited >= self.patience:
                trainer.stop_training = True


class HistoryLogger(Callback):
    """Append each epoch's record as one JSON line to ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


class EpochSummary(Callback):
    """Print one line per epoch with the training and validation metrics (to stderr)."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        import sys
        line = (f"epoch {record['epoch']}: loss {record['loss']:.4f}, accuracy {record['accuracy']:.4f}, "
                f"{record['images_per_s']:.0f} img/s")
        if "val_accuracy" in record:
            line += f" | val_loss {record['val_loss']:.4f}, val_accuracy {record['val_accuracy']:.4f}"
        print(line, file=sys.stderr, flush=True)
