"""Fully connected layer: ``y = x @ W.T + b`` with PyTorch's ``(out, in)`` weight layout."""

from __future__ import annotations

from typing import Any

from xpcnn import backend as B
from xpcnn.kernels import dispatch


@dispatch("linear_forward")
def linear_forward(x: Any, weight: Any, bias: Any | None) -> Any:
    """x: ``(N, in)``; weight: ``(out, in)``; bias: ``(out,)`` or None -> ``(N, out)``, in ``x``'s dtype."""
    xp = B.namespace_of(x, weight)
    y = x @ xp.permute_dims(weight, (1, 0))
    return y if bias is None else y + bias


@dispatch("linear_backward")
def linear_backward(grad_y: Any, x: Any, weight: Any, has_bias: bool, need_input_grad: bool = True
                    ) -> tuple[Any | None, Any, Any | None]:
    """Returns ``(grad_x (N, in) or None, grad_weight (out, in), grad_bias (out,) or None)`` for
    ``grad_y`` ``(N, out)``: ``grad_y @ W``, ``grad_y.T @ x`` and ``grad_y`` summed over the batch."""
    xp = B.namespace_of(grad_y, x)
    grad_w = xp.permute_dims(grad_y, (1, 0)) @ x
    grad_b = xp.sum(grad_y, axis=0) if has_bias else None
    grad_x = grad_y @ weight if need_input_grad else None
    return grad_x, grad_w, grad_b
