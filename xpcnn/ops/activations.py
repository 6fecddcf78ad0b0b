"""Element-wise activations: each forward returns the output, each backward takes what it cached.

Any shape; the output has the input's shape and dtype.
"""

from __future__ import annotations

from typing import Any

from xpcnn import backend as B
from xpcnn.kernels import dispatch


@dispatch("relu")
def relu_forward(x: Any) -> Any:
    """``max(x, 0)``."""
    return B.namespace_of(x).maximum(x, 0.0)


@dispatch("relu_grad")
def relu_backward(grad_y: Any, y: Any) -> Any:
    """Gradient of ReLU given its output ``y``: ``grad_y * (y > 0)`` (no gradient where ``y == 0``, as PyTorch)."""
    xp = B.namespace_of(grad_y, y)
    return grad_y * xp.astype(y > 0, grad_y.dtype)  # a multiply by a 0/1 mask: NumPy's `where` is ~7x slower


def leaky_relu_forward(x: Any, slope: float) -> Any:
    """``x`` where positive, ``slope * x`` elsewhere."""
    return B.namespace_of(x).where(x > 0, x, x * slope)


def leaky_relu_backward(grad_y: Any, x: Any, slope: float) -> Any:
    """Gradient of leaky ReLU given its input ``x``."""
    xp = B.namespace_of(grad_y, x)
    return grad_y * (xp.astype(x > 0, grad_y.dtype) * (1.0 - slope) + slope)


def tanh_forward(x: Any) -> Any:
    """Hyperbolic tangent."""
    return B.namespace_of(x).tanh(x)


@dispatch("tanh_grad")
def tanh_backward(grad_y: Any, y: Any) -> Any:
    """Gradient of tanh given its output ``y``: ``grad_y * (1 - y**2)``."""
    return grad_y * (1.0 - y * y)


def sigmoid_forward(x: Any) -> Any:
    """Logistic sigmoid, computed without overflow for large ``|x|``."""
    xp = B.namespace_of(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_backward(grad_y: Any, y: Any) -> Any:
    """Gradient of the sigmoid given its output ``y``: ``grad_y * y * (1 - y)``."""
    return grad_y * y * (1.0 - y)
