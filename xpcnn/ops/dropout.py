"""Inverted dropout: zero each value with probability ``p`` and scale the rest by ``1 / (1 - p)``."""

from __future__ import annotations

from typing import Any

from xpcnn import backend as B


def dropout_mask(keep: Any, p: float, dtype: Any) -> Any:
    """Scaled keep-mask ``(1 / (1 - p))`` where boolean ``keep`` (the input's shape) is True, else 0."""
    return B.elementwise.scaled_mask(keep, 1.0 / (1.0 - p), dtype)


def dropout_forward(x: Any, mask: Any) -> Any:
    """``x * mask``, any shape."""
    return B.elementwise.multiply(x, mask)


def dropout_backward(grad_y: Any, mask: Any) -> Any:
    """``grad_y * mask``."""
    return B.elementwise.multiply(grad_y, mask)
