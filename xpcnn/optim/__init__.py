"""Optimizers (``SGD``, ``Adam``, ``AdamW``) and learning-rate schedules."""

from xpcnn.optim.adam import Adam, AdamW
from xpcnn.optim.base import Optimizer
from xpcnn.optim.schedules import CosineAnnealingLR, OneCycleLR, Schedule, StepLR, WarmupCosineLR
from xpcnn.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "CosineAnnealingLR", "OneCycleLR", "Optimizer", "Schedule", "StepLR",
           "WarmupCosineLR"]
