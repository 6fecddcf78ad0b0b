"""Element-wise activation layers: ``ReLU``, ``LeakyReLU``, ``Tanh``, ``Sigmoid``."""

from __future__ import annotations

from typing import Any

from xpcnn.layers.base import Layer
from xpcnn.ops import activations as act


class ReLU(Layer):
    """``max(x, 0)``; any shape."""

    def __init__(self) -> None:
        super().__init__()
        self._y = None

    def forward(self, x: Any) -> Any:
        self._namespace(x)
        self._y = act.relu_forward(x)
        return self._y

    def backward(self, grad_out: Any) -> Any:
        self._expect_cached(self._y)
        return act.relu_backward(grad_out, self._y)


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

    def backward(self, grad_out: Any) -> Any:
        self._expect_cached(self._x)
        return act.leaky_relu_backward(grad_out, self._x, self.negative_slope)


class Tanh(Layer):
    """Hyperbolic tangent; any shape."""

    def __init__(self) -> None:
        super().__init__()
        self._y = None

    def forward(self, x: Any) -> Any:
        self._namespace(x)
        self._y = act.tanh_forward(x)
        return self._y

    def backward(self, grad_out: Any) -> Any:
        self._expect_cached(self._y)
        return act.tanh_backward(grad_out, self._y)


class Sigmoid(Layer):
    """Logistic sigmoid; any shape."""

    def __init__(self) -> None:
        super().__init__()
        self._y = None

    def forward(self, x: Any) -> Any:
        self._namespace(x)
        self._y = act.sigmoid_forward(x)
        return self._y

    def backward(self, grad_out: Any) -> Any:
        self._expect_cached(self._y)
        return act.sigmoid_backward(grad_out, self._y)
