"""Element-wise activation layers: ``ReLU``, ``LeakyReLU``, ``Tanh``, ``Sigmoid``, ``GELU``."""

from __future__ import annotations

from typing import Any

from xpcnn.layers.base import Layer
from xpcnn.ops import activations as act


class _FromOutput(Layer):
    """An activation whose gradient needs only its own output ``y``: it caches ``y``."""

    _forward = staticmethod(act.relu_forward)
    _backward = staticmethod(act.relu_backward)

    def __init__(self) -> None:
        super().__init__()
        self._y = None

    def forward(self, x: Any) -> Any:
        self._namespace(x)
        self._y = type(self)._forward(x)
        return self._y

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        self._expect_cached(self._y)
        return type(self)._backward(grad_out, self._y)


class ReLU(_FromOutput):
    """``max(x, 0)``; any shape."""


class Tanh(_FromOutput):
    """Hyperbolic tangent; any shape."""

    _forward = staticmethod(act.tanh_forward)
    _backward = staticmethod(act.tanh_backward)


class Sigmoid(_FromOutput):
    """Logistic sigmoid; any shape."""

    _forward = staticmethod(act.sigmoid_forward)
    _backward = staticmethod(act.sigmoid_backward)


class LeakyReLU(Layer):
    """``x`` where positive, ``negative_slope * x`` elsewhere; any shape."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)
        self._x = None

    def config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}

    def forward(self, x: Any) -> Any:
        self._namespace(x)
        self._x = x
        return act.leaky_relu_forward(x, self.negative_slope)

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        self._expect_cached(self._x)
        return act.leaky_relu_backward(grad_out, self._x, self.negative_slope)


class GELU(Layer):
    """Gaussian error linear unit, as PyTorch's ``nn.GELU(approximate)``; any shape.

    ``approximate="none"`` (default) is the exact ``x * Phi(x)``, with the normal CDF ``Phi`` computed by
    rational approximations of erf/erfc (:func:`xpcnn.ops.activations.normal_cdf`: relative error below 1e-15
    in float64, so float32 results are PyTorch's to rounding); ``"tanh"`` is PyTorch's tanh approximation, formula
    for formula. Raises ValueError for another ``approximate``.
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self._x = self._cache = None

    def config(self) -> dict[str, Any]:
        return {"approximate": self.approximate}

    def forward(self, x: Any) -> Any:
        self._namespace(x)
        self._x = x
        y, self._cache = act.gelu_forward(x, self.approximate)
        return y

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        self._expect_cached(self._x)
        return act.gelu_backward(grad_out, self._x, self._cache, self.approximate)
