"""``MaxPool2D``, ``AvgPool2D`` and ``GlobalAvgPool2D`` over ``(N, C, H, W)`` input."""

from __future__ import annotations

from typing import Any

from xpcnn.errors import ShapeError
from xpcnn.layers.base import Layer
from xpcnn.ops.pool import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    global_avg_pool2d_backward,
    global_avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)
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

    def check_input(self, x: Any) -> None:
        """Raise :class:`ShapeError` unless ``x`` is an ``(N, C, H, W)`` array at least one window large."""
        self._expect_rank(x, 4, "(N, C, H, W)")
        self._namespace(x)
        self.output_shape(tuple(x.shape))

    def forward(self, x: Any) -> Any:
        self.check_input(x)
        y, self._ctx = type(self)._forward(x, self.kernel_size, self.stride, self.padding)
        return y

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        self._expect_cached(self._ctx)
        return type(self)._backward(grad_out, self._ctx)


class MaxPool2D(_Pool2D):
    """Max over ``kernel_size`` windows of ``(N, C, H, W)`` input (stride defaults to the kernel; padding
    counts as -inf); ties send the gradient to the first maximum in row-major order, as PyTorch."""


class AvgPool2D(_Pool2D):
    """Mean over ``kernel_size`` windows of ``(N, C, H, W)`` input (stride defaults to the kernel; zero
    padding counts, as in PyTorch)."""

    _forward = staticmethod(avg_pool2d_forward)
    _backward = staticmethod(avg_pool2d_backward)


class GlobalAvgPool2D(Layer):
    """Mean over each channel's whole plane: ``(N, C, H, W)`` -> ``(N, C, 1, 1)``, as PyTorch's
    ``nn.AdaptiveAvgPool2d(1)`` (follow it with :class:`~xpcnn.layers.Flatten` for ``(N, C)``). Any ``H x W``.

    Raises :class:`~xpcnn.errors.ShapeError` for input that is not 4-D.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, int, int, int] | None = None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 4:
            raise ShapeError(f"{self.name}: expected a 4-D input (N, C, H, W), got shape {tuple(input_shape)}")
        return (input_shape[0], input_shape[1], 1, 1)

    def forward(self, x: Any) -> Any:
        self._expect_rank(x, 4, "(N, C, H, W)")
        self._namespace(x)
        self._shape = tuple(x.shape)
        return global_avg_pool2d_forward(x)

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        self._expect_cached(self._shape)
        return global_avg_pool2d_backward(grad_out, self._shape)


def AdaptiveAvgPool2d(output_size: int | tuple[int, int] = 1) -> GlobalAvgPool2D:  # noqa: N802 - PyTorch's name
    """PyTorch's name for :class:`GlobalAvgPool2D`, for ``output_size`` 1 (or ``(1, 1)``) only.

    Raises ValueError for any other output size (xpcnn has no adaptive pooling to larger outputs)."""
    if output_size not in (1, (1, 1), [1, 1]):
        raise ValueError(f"AdaptiveAvgPool2d: xpcnn supports output_size=1 only (GlobalAvgPool2D), got "
                         f"{output_size!r}; for other sizes use AvgPool2D with a fitting kernel_size and stride")
    return GlobalAvgPool2D()
