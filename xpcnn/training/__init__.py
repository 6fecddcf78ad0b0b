"""Training: the ``Trainer``, its callbacks and metrics."""

from xpcnn.training.callbacks import (Callback, EarlyStopping, EpochSummary, HistoryLogger, ModelCheckpoint,
                                      format_epoch)
from xpcnn.training.trainer import Trainer, TrainingDiverged, TrainingInterrupted

__all__ = ["Callback", "EarlyStopping", "EpochSummary", "HistoryLogger", "ModelCheckpoint", "Trainer",
           "TrainingDiverged", "TrainingInterrupted", "format_epoch"]
