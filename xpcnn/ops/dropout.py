"""Inverted dropout: zero each value with probability ``p`` and scale the rest by ``1 / (1 - p)``."""

from __future__ import annotations

from typing import Any

from xpcnn import backend as B


def dropout_mask(uniform: Any, p: float, dtype: Any) -> Any:
    """Scaled keep-mask from uniform ``[0, 1)`` draws of the input's shape."""
    xp = B.namespace_of(uniform)
    return xp.astype(uniform >= p, dtype) * (1.0 / (1.0 - p))


def dropout_forward(x: Any, mask: Any) -> Any:
    """``x * mask``, any shape."""
    return x * mask


def dropout_backward(grad_y: Any, mask: Any) -> Any:
    """``grad_y * mask``."""
    return grad_y * mask
