"""Arithmetic on whole arrays that layers share."""

from __future__ import annotations

from typing import Any

from xpcnn.kernels import dispatch


@dispatch("accumulate")
def accumulate(total: Any, more: Any, protected: Any = None) -> Any:
    """``total + more`` (same shape and dtype), for a caller that gives ``total`` up: a kernel may write the
    sum into ``total`` and return it (NumPy's does, in one pass and without a new array) unless ``total``
    shares memory with ``more`` or with ``protected`` (an array the caller must not see change, such as the
    gradient it was handed). A residual block's backward pass adds its two paths' input gradients with it."""
    return total + more
