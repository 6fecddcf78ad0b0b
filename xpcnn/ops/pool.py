"""Max and average 2-D pooling as ``kh * kw`` strided slices (overlapping windows allowed).

Channel-last inside like :mod:`xpcnn.ops.conv`, so channel-last-backed inputs cost no copy. The
window passes are dispatched ops (:mod:`xpcnn.kernels`): NumPy runs compiled or threaded kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xpcnn import backend as B
from xpcnn.kernels import dispatch
from xpcnn.ops.shapes import Pair, Padding, output_hw


@dataclass
class PoolContext:
    """Geometry of a pooling call, plus the padded input and output (max pool only)."""

    padded_shape: tuple[int, int, int, int]
    kernel: Pair
    stride: Pair
    padding: Padding
    out_hw: Pair
    x_padded: Any = None
    y: Any = None


def window_slices(kernel: Pair, stride: Pair, out_hw: Pair) -> list[tuple]:
    """One strided ``(N, Ho, Wo, C)`` slice per kernel offset, in row-major order."""
    return [B.window_index(i, j, out_hw, stride, (1, 1)) for i in range(kernel[0]) for j in range(kernel[1])]


def pool_geometry(x: Any, kernel: Pair, stride: Pair, padding: Padding, value: float = 0.0) -> tuple[Any, PoolContext]:
    """``x`` ``(N, C, H, W)`` padded with ``value`` as channel-last ``(N, Hp, Wp, C)``, and its context."""
    out_hw = output_hw(tuple(x.shape[2:]), kernel, stride, padding, (1, 1))
    x_padded = B.pad_hw(B.channels_last(x), *padding, value=value)
    return x_padded, PoolContext(tuple(x_padded.shape), kernel, stride, padding, out_hw)


def max_pool2d_forward(x: Any, kernel: Pair, stride: Pair, padding: Padding) -> tuple[Any, PoolContext]:
    """Max over each window. x: ``(N, C, H, W)`` -> ``(N, C, Ho, Wo)``; padding counts as -inf."""
    x_padded, ctx = pool_geometry(x, kernel, stride, padding, value=-float("inf"))
    ctx.x_padded = x_padded
    ctx.y = window_max(x_padded, kernel, stride, ctx.out_hw)
    return B.channels_first(ctx.y), ctx


def max_pool2d_backward(grad_y: Any, ctx: PoolContext) -> Any:
    """Each output gradient to its window's first maximum (row-major order, as PyTorch); ``(N, C, H, W)``."""
    dx = max_pool_grad(B.channels_last(grad_y), ctx.x_padded, ctx.y, ctx.kernel, ctx.stride, ctx.out_hw)
    return B.channels_first(B.crop_hw(dx, *ctx.padding))


def avg_pool2d_forward(x: Any, kernel: Pair, stride: Pair, padding: Padding) -> tuple[Any, PoolContext]:
    """Mean over each window, zero padding included in the count (PyTorch's default)."""
    x_padded, ctx = pool_geometry(x, kernel, stride, padding)
    return B.channels_first(window_mean(x_padded, kernel, stride, ctx.out_hw)), ctx


def avg_pool2d_backward(grad_y: Any, ctx: PoolContext) -> Any:
    """Each output gradient spread evenly over its window; ``(N, C, H, W)``."""
    dx = mean_pool_grad(B.channels_last(grad_y), ctx.padded_shape, ctx.kernel, ctx.stride, ctx.out_hw)
    return B.channels_first(B.crop_hw(dx, *ctx.padding))


# -- the window passes, channel-last: x (N, Hp, Wp, C), outputs and their gradients (N, Ho, Wo, C) ------------
@dispatch("window_max")
def window_max(x: Any, kernel: Pair, stride: Pair, out_hw: Pair) -> Any:
    """Element-wise maximum over the windows' strided slices."""
    xp = B.namespace_of(x)
    slices = window_slices(kernel, stride, out_hw)
    y = x[slices[0]]
    for index in slices[1:]:
        y = xp.maximum(y, x[index])
    return y


@dispatch("max_pool_grad")
def max_pool_grad(g: Any, x: Any, y: Any, kernel: Pair, stride: Pair, out_hw: Pair) -> Any:
    """Gradient ``(N, Hp, Wp, C)`` of :func:`window_max`: each window's first maximum (row-major) takes its
    output's gradient, as in PyTorch; a later tie gets none (the "not yet routed" remainder shrinks offset by
    offset). The last offset takes what is left, which is its own gradient where it holds the maximum and
    all of it in a window without one (a NaN window)."""
    xp = B.namespace_of(g, x)
    dx = xp.zeros(tuple(x.shape), dtype=g.dtype, device=B.device_of(g))
    slices = window_slices(kernel, stride, out_hw)
    remaining = g
    for index in slices[:-1]:
        taken = remaining * xp.astype(x[index] == y, g.dtype)
        dx = B.add_at(dx, index, taken)
        remaining = remaining - taken
    return B.add_at(dx, slices[-1], remaining)


@dispatch("window_mean")
def window_mean(x: Any, kernel: Pair, stride: Pair, out_hw: Pair) -> Any:
    """Element-wise mean over the windows' strided slices."""
    slices = window_slices(kernel, stride, out_hw)
    y = x[slices[0]]
    for index in slices[1:]:
        y = y + x[index]
    return y / float(len(slices))


@dispatch("mean_pool_grad")
def mean_pool_grad(g: Any, padded_shape: tuple[int, int, int, int], kernel: Pair, stride: Pair, out_hw: Pair) -> Any:
    """Gradient ``(N, Hp, Wp, C)`` of :func:`window_mean`: ``g`` over the window size, added over each window."""
    xp = B.namespace_of(g)
    g = g / float(kernel[0] * kernel[1])
    dx = xp.zeros(padded_shape, dtype=g.dtype, device=B.device_of(g))
    for index in window_slices(kernel, stride, out_hw):
        dx = B.add_at(dx, index, g)
    return dx


def global_avg_pool2d_forward(x: Any) -> Any:
    """Mean over each channel's whole ``H x W`` plane: ``(N, C, H, W)`` -> ``(N, C, 1, 1)`` (PyTorch's
    ``adaptive_avg_pool2d(x, 1)``)."""
    return B.namespace_of(x).mean(x, axis=(2, 3), keepdims=True)


def global_avg_pool2d_backward(grad_y: Any, input_shape: tuple[int, int, int, int]) -> Any:
    """Gradient ``(N, C, H, W)`` of :func:`global_avg_pool2d_forward`: each ``(N, C, 1, 1)`` output gradient spread
    evenly over its plane (a new array, never a read-only broadcast view)."""
    xp = B.namespace_of(grad_y)
    h, w = input_shape[2], input_shape[3]
    return xp.zeros(input_shape, dtype=grad_y.dtype, device=B.device_of(grad_y)) + grad_y / float(h * w)
