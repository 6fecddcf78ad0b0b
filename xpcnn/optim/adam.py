"""Adam and AdamW, following ``torch.optim.Adam`` / ``torch.optim.AdamW`` step for step."""

from __future__ import annotations

import math
from typing import Any

from xpcnn import backend as B
from xpcnn.model import Sequential
from xpcnn.ops.optimizers import adam_step
from xpcnn.optim.base import Optimizer


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` adds ``weight_decay * p`` to the gradient (L2)."""

    decoupled = False

    def __init__(self, model: Sequential, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(model, lr)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1), got {betas!r}")
        if eps <= 0 or weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: eps must be positive and weight_decay non-negative")
        self.betas, self.eps, self.weight_decay = (float(betas[0]), float(betas[1])), float(eps), float(weight_decay)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def update(self, key: str, param: Any, grad: Any, state: dict[str, Any]) -> Any:
        b1, b2 = self.betas
        t = self.step_count
        if "exp_avg" not in state:
            xp = B.namespace_of(param)
            state["exp_avg"] = xp.zeros_like(param)
            state["exp_avg_sq"] = xp.zeros_like(param)
        param, state["exp_avg"], state["exp_avg_sq"] = adam_step(
            param, grad, state["exp_avg"], state["exp_avg_sq"], b1=b1, b2=b2, step_size=self.lr / (1.0 - b1 ** t),
            sqrt_bias2=math.sqrt(1.0 - b2 ** t), eps=self.eps, l2=0.0 if self.decoupled else self.weight_decay,
            keep=1.0 - self.lr * self.weight_decay if self.decoupled else 1.0)
        return param


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr * weight_decay`` before the step); default 0.01."""

    decoupled = True

    def __init__(self, model: Sequential, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(model, lr, betas, eps, weight_decay)
