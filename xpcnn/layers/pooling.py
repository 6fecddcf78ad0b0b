"""``MaxPool2D`` and ``AvgPool2D`` over ``(N, C, H, W)`` input."""

from __future__ import annotations

from typing import Any

from xpcnn.errors import ShapeError
from xpcnn.layers.base import Layer
from xpcnn.ops.pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward
from xpcnn.ops.shapes import output_hw, pair


class _Pool2D(Layer):
    _forward = staticmethod(max_pool2d_forward)
    _backward = staticmethod(max_pool2d_backward)

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        ph, pw = pair(padding, "padding")
        if min(self.kernel_size + self.stride) <= 0 or ph < 0 or pw < 0:
            raise ValueError(f"{self.name}: kernel_size and stride must be positive and padding non-negative")
        if 2 * ph > self.kernel_size[0] or 2 * pw > self.kernel_size[1]:
            raise ValueError(f"{self.name}: padding {padding} must be at most half the kernel {self.kernel_size}"
                             " (as in PyTorch)")
        self.padding = (ph, ph, pw, pw)
        self._ctx = None

    def config(self) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": [self.padding[0], self.padding[2]]}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = input_shape
        ho, wo = output_hw((h, w), self.kernel_size, self.stride, self.padding, (1, 1))
        if ho <= 0 or wo <= 0:
            raise ShapeError(f"{self.name}: input {h}x{w} is smaller than the "
                             f"{self.kernel_size[0]}x{self.kernel_size[1]} pooling window")
        return (n, c, ho, wo)

    def forward(self, x: Any) -> Any:
        return self._forward_with(x)

    def backward(self, grad_out: Any) -> Any:
        self._expect_cached(self._ctx)
        return type(self)._backward(grad_out, self._ctx)

    def _forward_with(self, x: Any, **activation: bool) -> Any:
        """The forward pass, of ``activation(x)`` where one is folded in (``relu=True``, ``tanh=True``)."""
        self._expect_rank(x, 4, "(N, C, H, W)")
        self._namespace(x)
        self.output_shape(tuple(x.shape))
        y, self._ctx = type(self)._forward(x, self.kernel_size, self.stride, self.padding, **activation)
        return y


class MaxPool2D(_Pool2D):
    """Max over ``kernel_size`` windows (stride defaults to the kernel); ties send the gradient to the first maximum."""

    def forward_relu(self, x: Any) -> Any:
        """``forward(relu(x))`` without materializing ``relu(x)``: the ReLU runs on the pooled output.

        The next :meth:`backward` then returns the gradient with respect to ``x`` (ReLU's included).
        :class:`~xpcnn.model.Sequential` uses it for a ReLU followed by a max-pool.
        """
        return self._forward_with(x, relu=True)


class AvgPool2D(_Pool2D):
    """Mean over ``kernel_size`` windows (stride defaults to the kernel; zero padding counts, as in PyTorch)."""

    _forward = staticmethod(avg_pool2d_forward)
    _backward = staticmethod(avg_pool2d_backward)

    def forward_tanh(self, x: Any) -> Any:
        """``forward(tanh(x))`` in one step: each thread's share of ``tanh(x)`` is pooled while still in cache.

        The next :meth:`backward` then returns the gradient with respect to ``x`` (tanh's included, in
        the same pass). :class:`~xpcnn.model.Sequential` uses it for a Tanh followed by an average pool.
        """
        return self._forward_with(x, tanh=True)
