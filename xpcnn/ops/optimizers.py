"""Optimizer updates of one parameter, as pure array code (the optimizers in :mod:`xpcnn.optim` call them)."""

from __future__ import annotations

from typing import Any

from xpcnn import backend as B
from xpcnn.kernels import dispatch


@dispatch("adam_step")
def adam_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, *, b1: float, b2: float, step_size: float,
              sqrt_bias2: float, eps: float, l2: float = 0.0, keep: float = 1.0) -> tuple[Any, Any, Any]:
    """One Adam/AdamW step, in the order of ``torch.optim.Adam``/``AdamW``:
    ``p *= keep`` (decoupled decay), ``g' = g + l2 * p`` (L2 decay), ``m = b1*m + (1-b1)*g'``,
    ``v = b2*v + (1-b2)*g'^2``, ``p -= step_size * m / (sqrt(v) / sqrt_bias2 + eps)``, where
    ``step_size = lr / (1 - b1**t)`` and ``sqrt_bias2 = sqrt(1 - b2**t)`` (Kingma & Ba 2015, Algorithm 1;
    Loshchilov & Hutter 2019 for the decoupled decay).

    All four arrays share one shape and dtype. Returns ``(param, exp_avg, exp_avg_sq)``: the same
    arrays updated in place where the backend writes in place (NumPy, CuPy, PyTorch), new ones on JAX.
    """
    if keep != 1.0:
        param *= keep
    if l2:
        grad = grad + l2 * param
    exp_avg *= b1
    exp_avg += (1.0 - b1) * grad
    exp_avg_sq *= b2
    exp_avg_sq += (1.0 - b2) * (grad * grad)
    denom = B.namespace_of(exp_avg_sq).sqrt(exp_avg_sq)
    denom /= sqrt_bias2
    denom += eps
    update = exp_avg / denom
    update *= step_size
    param -= update
    return param, exp_avg, exp_avg_sq
