"""Adam and AdamW, following ``torch.optim.Adam`` / ``torch.optim.AdamW`` step for step."""

from __future__ import annotations

import math
from typing import Any

from xpcnn import backend as B
from xpcnn.model import Sequential
from xpcnn.ops.optimizers import adam_step
from xpcnn.optim.base import Optimizer, checked


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` adds ``weight_decay * p`` to the gradient (L2).

    Raises ValueError naming the argument for a learning rate or ``eps`` that is not a finite number > 0, a
    beta outside [0, 1) and a weight decay that is not a finite number >= 0.
    """

    decoupled = False

    def __init__(self, model: Sequential, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(model, lr)
        owner = type(self).__name__
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (checked(owner, "beta parameter at index 0", beta1, 0.0, 1.0),
                      checked(owner, "beta parameter at index 1", beta2, 0.0, 1.0))
        self.eps = checked(owner, "epsilon value", eps, 0.0, low_ok=False)
        self.weight_decay = checked(owner, "weight_decay value", weight_decay, 0.0)

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
