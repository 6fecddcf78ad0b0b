"""Learning-rate schedules: ``StepLR`` and ``CosineAnnealingLR`` step once per epoch, as in PyTorch;
``WarmupCosineLR`` and ``OneCycleLR`` (the CIFAR-10 speed runs' schedules) once per batch, as PyTorch's
``OneCycleLR`` is used. :class:`~xpcnn.Trainer` steps each at its ``interval``."""

from __future__ import annotations

import math
import numbers
from typing import Any

from xpcnn.optim.base import Optimizer, checked


class Schedule:
    """Base: remembers the optimizer's initial rate and sets ``optimizer.lr`` on each :meth:`step`.

    ``interval`` says when :class:`~xpcnn.Trainer` steps it: ``"epoch"`` (after each epoch) or ``"batch"`` (after
    each optimizer step). ``epoch`` counts the steps taken so far in that unit (PyTorch's ``last_epoch``, which
    counts batches for a per-batch schedule too)."""

    interval = "epoch"

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0

    def rate(self, epoch: int) -> float:
        """The learning rate for ``epoch`` (0-based)."""
        raise NotImplementedError

    def step(self) -> float:
        """Advance one epoch (one batch for a per-batch schedule) and return the new learning rate."""
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


def _positive_int(owner: str, label: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner}: {label} must be an int >= {minimum}, got {value!r}")
    return int(value)


class WarmupCosineLR(Schedule):
    """Linear warm-up over ``warmup_steps`` batches, then cosine decay to ``eta_min`` at ``total_steps``; stepped
    per batch. The rate of step ``t`` (0-based) is ``lr * (start_factor + (1 - start_factor) * t / warmup_steps)``
    while ``t < warmup_steps``, then ``eta_min + (lr - eta_min) * (1 + cos(pi * (t - warmup_steps) / (total_steps
    - warmup_steps))) / 2``, and ``eta_min`` after ``total_steps``: PyTorch's ``SequentialLR([LinearLR(start_factor,
    total_iters=warmup_steps), CosineAnnealingLR(T_max=total_steps - warmup_steps, eta_min)], [warmup_steps])``.

    Raises ValueError for a ``total_steps`` that is not a positive int, a ``warmup_steps`` that is not an int in
    ``[0, total_steps)``, a ``start_factor`` outside ``(0, 1]`` or an ``eta_min`` that is not a finite number >= 0.
    """

    interval = "batch"

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, eta_min: float = 0.0,
                 start_factor: float = 0.1) -> None:
        super().__init__(optimizer)
        self.total_steps = _positive_int("WarmupCosineLR", "total_steps", total_steps)
        self.warmup_steps = _positive_int("WarmupCosineLR", "warmup_steps", warmup_steps, 0)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"WarmupCosineLR: warmup_steps ({warmup_steps}) must be below total_steps ({total_steps})")
        self.eta_min = checked("WarmupCosineLR", "eta_min value", eta_min, 0.0)
        self.start_factor = checked("WarmupCosineLR", "start_factor", start_factor, 0.0, 1.0, low_ok=False,
                                    high_ok=True)
        optimizer.lr = self.rate(0)

    def rate(self, epoch: int) -> float:
        if epoch < self.warmup_steps:
            return self.base_lr * (self.start_factor + (1.0 - self.start_factor) * epoch / self.warmup_steps)
        t = min(epoch, self.total_steps) - self.warmup_steps
        cos = (1 + math.cos(math.pi * t / (self.total_steps - self.warmup_steps))) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cos


class OneCycleLR(Schedule):
    """PyTorch's ``OneCycleLR`` (two phases, cosine annealing), stepped per batch, with the optimizer's rate as
    ``max_lr``: from ``max_lr / div_factor`` up to ``max_lr`` over the first ``pct_start`` of ``total_steps``, then
    down to ``max_lr / div_factor / final_div_factor``. With ``cycle_momentum`` (PyTorch's default) the momentum
    (SGD's ``momentum``, Adam's first beta) goes the other way, from ``max_momentum`` down to ``base_momentum`` and
    back; it is set to ``max_momentum`` at once, as PyTorch does. Steps past ``total_steps`` keep the final rate
    (PyTorch raises there; :meth:`xpcnn.Trainer.fit` refuses a run longer than the schedule up front).

    Raises ValueError for a ``total_steps`` that is not a positive int, a ``pct_start`` outside ``(0, 1)``,
    factors that are not finite numbers > 0, momenta outside ``[0, 1)`` with ``base_momentum <= max_momentum``,
    and ``cycle_momentum`` with an optimizer that has no momentum (PyTorch's rule).
    """

    interval = "batch"

    def __init__(self, optimizer: Optimizer, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, cycle_momentum: bool = True, base_momentum: float = 0.85,
                 max_momentum: float = 0.95) -> None:
        super().__init__(optimizer)
        owner = "OneCycleLR"
        self.total_steps = _positive_int(owner, "total_steps", total_steps)
        self.pct_start = checked(owner, "pct_start", pct_start, 0.0, 1.0, low_ok=False)
        self.div_factor = checked(owner, "div_factor", div_factor, 0.0, low_ok=False)
        self.final_div_factor = checked(owner, "final_div_factor", final_div_factor, 0.0, low_ok=False)
        self.base_momentum = checked(owner, "base_momentum", base_momentum, 0.0, 1.0)
        self.max_momentum = checked(owner, "max_momentum", max_momentum, self.base_momentum, 1.0)
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum and not (hasattr(optimizer, "momentum") or hasattr(optimizer, "betas")):
            raise ValueError(f"OneCycleLR: {type(optimizer).__name__} has no momentum to cycle; pass "
                             "cycle_momentum=False")
        self._phases = ((float(self.pct_start * self.total_steps) - 1, 1.0 / self.div_factor, 1.0),
                        (float(self.total_steps - 1), 1.0, 1.0 / (self.div_factor * self.final_div_factor)))
        optimizer.lr = self.rate(0)
        self._set_momentum(0)

    def _phase(self, step: int) -> tuple[float, int]:
        """``(pct, phase index)`` of ``step``: PyTorch's ``OneCycleLR.get_lr`` phase walk."""
        start = 0.0
        for i, (end, _, _) in enumerate(self._phases):
            if step <= end or i == len(self._phases) - 1:
                return (step - start) / (end - start), i
            start = end
        raise AssertionError("unreachable")

    @staticmethod
    def _anneal(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def rate(self, epoch: int) -> float:
        pct, i = self._phase(min(epoch, self.total_steps - 1))
        _, start, end = self._phases[i]
        return self.base_lr * self._anneal(start, end, pct)

    def momentum(self, epoch: int) -> float:
        """The momentum of step ``epoch`` (with ``cycle_momentum``)."""
        pct, i = self._phase(min(epoch, self.total_steps - 1))
        ends = ((self.max_momentum, self.base_momentum), (self.base_momentum, self.max_momentum))[i]
        return self._anneal(*ends, pct)

    def _set_momentum(self, epoch: int) -> None:
        if not self.cycle_momentum:
            return
        value = self.momentum(epoch)
        if hasattr(self.optimizer, "betas"):
            self.optimizer.betas = (value, self.optimizer.betas[1])
        else:
            self.optimizer.momentum = value

    def step(self) -> float:
        lr = super().step()
        self._set_momentum(self.epoch)
        return lr

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._set_momentum(self.epoch)
