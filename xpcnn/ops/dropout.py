"""Inverted dropout: zero each value with probability ``p`` and scale the rest by ``1 / (1 - p)``."""

from __future__ import annotations

from typing import Any

from xpcnn import backend as B
from xpcnn.kernels import dispatch


@dispatch("dropout_mask")
def dropout_mask(keep: Any, p: float, dtype: Any) -> Any:
    """``1 / (1 - p)`` where boolean ``keep`` is True, else 0, as ``dtype``; ``keep``'s shape."""
    return B.namespace_of(keep).astype(keep, dtype) * (1.0 / (1.0 - p))


@dispatch("dropout_apply")
def dropout_forward(x: Any, mask: Any) -> Any:
    """``x * mask``, any shape (both the same)."""
    return x * mask


#: The backward pass multiplies by the same mask.
dropout_backward = dropout_forward
