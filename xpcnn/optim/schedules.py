"""Learning-rate schedules, stepped once per epoch (as PyTorch's ``StepLR`` and ``CosineAnnealingLR``)."""

from __future__ import annotations

import math
from typing import Any

from xpcnn.optim.base import Optimizer


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
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        if step_size <= 0:
            raise ValueError(f"StepLR: step_size must be positive, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def rate(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(Schedule):
    """Cosine decay from the initial rate to ``eta_min`` over ``t_max`` epochs."""

    def __init__(self, optimizer: Optimizer, t_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer)
        if t_max <= 0:
            raise ValueError(f"CosineAnnealingLR: t_max must be positive, got {t_max}")
        self.t_max, self.eta_min = int(t_max), float(eta_min)

    def rate(self, epoch: int) -> float:
        cos = (1 + math.cos(math.pi * min(epoch, self.t_max) / self.t_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cos
