"""Learning-rate schedules, stepped once per epoch (as PyTorch's ``StepLR`` and ``CosineAnnealingLR``)."""

from __future__ import annotations

import math
import numbers
from typing import Any

from xpcnn.optim.base import Optimizer, checked


class Schedule:
    """Base: remembers the optimizer's initial rate and sets ``optimizer.lr`` on each :meth:`step`."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0

    def rate(self, epoch: int) -> float:
        """The learning rate for ``epoch`` (0-based)."""
        raise NotImplementedError

    def step(self) -> float:
        """Advance one epoch and return the new learning rate."""
        self.epoch += 1
        self.optimizer.lr = self.rate(self.epoch)
        return self.optimizer.lr

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "base_lr": self.base_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.base_lr = int(state["epoch"]), float(state["base_lr"])
        self.optimizer.lr = self.rate(self.epoch)


class StepLR(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs.

    Raises ValueError for a ``step_size`` that is not a positive int or a ``gamma`` that is not a finite
    number > 0.
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Integral) or step_size <= 0:
            raise ValueError(f"StepLR: step_size must be a positive int, got {step_size!r}")
        self.step_size, self.gamma = int(step_size), checked("StepLR", "gamma value", gamma, 0.0, low_ok=False)

    def rate(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(Schedule):
    """Cosine decay from the initial rate to ``eta_min`` over ``t_max`` epochs.

    Raises ValueError for a ``t_max`` that is not a positive int or an ``eta_min`` that is not a finite
    number >= 0.
    """

    def __init__(self, optimizer: Optimizer, t_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer)
        if isinstance(t_max, bool) or not isinstance(t_max, numbers.Integral) or t_max <= 0:
            raise ValueError(f"CosineAnnealingLR: t_max must be a positive int, got {t_max!r}")
        self.t_max, self.eta_min = int(t_max), checked("CosineAnnealingLR", "eta_min value", eta_min, 0.0)

    def rate(self, epoch: int) -> float:
        cos = (1 + math.cos(math.pi * min(epoch, self.t_max) / self.t_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cos
