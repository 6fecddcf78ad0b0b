"""Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay, as ``torch.optim.SGD``."""

from __future__ import annotations

from typing import Any

from xpcnn.model import Sequential
from xpcnn.optim.base import Optimizer, checked


class SGD(Optimizer):
    """``p -= lr * g`` with ``g += weight_decay * p`` and momentum buffer ``b = momentum * b + g``.

    Raises ValueError naming the argument for a learning rate that is not a finite number > 0, a momentum or
    weight decay that is not a finite number >= 0, and ``nesterov=True`` without momentum.
    """

    def __init__(self, model: Sequential, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(model, lr)
        momentum = checked("SGD", "momentum value", momentum, 0.0)
        weight_decay = checked("SGD", "weight_decay value", weight_decay, 0.0)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov=True needs a positive momentum")
        self.momentum, self.nesterov, self.weight_decay = momentum, bool(nesterov), weight_decay

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def update(self, key: str, param: Any, grad: Any, state: dict[str, Any]) -> Any:
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if self.momentum:
            buf = state.get("momentum_buffer")
            buf = grad if buf is None else self.momentum * buf + grad
            state["momentum_buffer"] = buf
            grad = grad + self.momentum * buf if self.nesterov else buf
        return param - self.lr * grad
