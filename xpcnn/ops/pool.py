"""Max and average 2-D pooling as ``kh * kw`` strided slices (overlapping windows allowed).

Works channel-last internally like :mod:`xpcnn.ops.conv`, so NHWC-backed inputs cost no copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xpcnn import backend as B
from xpcnn.ops.shapes import Pair, output_hw


@dataclass
class PoolContext:
    """Geometry of a pooling call, plus the padded input and output (max pool only)."""

    padded_shape: tuple[int, int, int, int]
    kernel: Pair
    stride: Pair
    padding: tuple[int, int, int, int]
    out_hw: Pair
    x_padded: Any = None
    y: Any = None
    relu: bool = False  # the forward pooled relu(x): see max_pool2d_forward
    tanh_y: Any = None  # tanh(x_padded), when the forward pooled it: see avg_pool2d_forward


def _window_slices(kernel: Pair, stride: Pair, out_hw: Pair) -> list[tuple]:
    """One strided ``(N, Ho, Wo, C)`` slice per kernel offset, in row-major order."""
    return [B.window_index(i, j, out_hw, stride, (1, 1)) for i in range(kernel[0]) for j in range(kernel[1])]


def _geometry(x: Any, kernel: Pair, stride: Pair, padding: tuple[int, int, int, int]
              ) -> tuple[Pair, list[tuple]]:
    out_hw = output_hw(tuple(x.shape[2:]), kernel, stride, padding, (1, 1))
    return out_hw, _window_slices(kernel, stride, out_hw)


def max_pool2d_forward(x: Any, kernel: Pair, stride: Pair, padding: tuple[int, int, int, int],
                       relu: bool = False) -> tuple[Any, PoolContext]:
    """Max over each window. x: ``(N, C, H, W)`` -> ``(N, C, Ho, Wo)``; padding counts as -inf.

    With ``relu``, the max over windows of ``relu(x)``, computed as ``relu`` of the max (the same
    values, on an array ``kh*kw`` times smaller); the backward pass then returns the gradient
    with respect to ``x``, ReLU's gradient included.
    """
    out_hw, slices = _geometry(x, kernel, stride, padding)
    x_padded = B.pad_hw(B.channels_last(x), *padding, value=-float("inf"))
    y = B.window_max(x_padded, slices)
    ctx = PoolContext(tuple(x_padded.shape), kernel, stride, padding, out_hw, x_padded, y, relu)
    return B.channels_first(B.elementwise.relu(y) if relu else y), ctx


def max_pool2d_backward(grad_y: Any, ctx: PoolContext) -> Any:
    """Route each output gradient to its window's first maximum (row-major order, as PyTorch does)."""
    xp = B.namespace_of(grad_y, ctx.x_padded)
    g = B.channels_last(grad_y)
    if ctx.relu:
        # Where a window's maximum is positive, relu(x)'s first maximum is x's; elsewhere ReLU passes
        # no gradient to any of the window's values. So: mask the pooled gradient, then route.
        g = B.elementwise.relu_grad(g, ctx.y)
    if _tiles_exactly(ctx) and not B.is_jax(xp):
        return B.channels_first(B.first_max_grad(ctx.x_padded, ctx.y, g, ctx.kernel, ctx.out_hw))
    dx = xp.zeros(ctx.padded_shape, dtype=g.dtype, device=B.device_of(g))
    slices = _window_slices(ctx.kernel, ctx.stride, ctx.out_hw)
    remaining = g  # gradient not yet routed: once a window's first maximum takes it, later ties get zero
    for k, index in enumerate(slices):
        taken = remaining * xp.astype(ctx.x_padded[index] == ctx.y, g.dtype)
        dx = B.add_at(dx, index, taken)
        if k + 1 < len(slices):
            remaining = remaining - taken
    return B.channels_first(B.crop_hw(dx, *ctx.padding))


def _tiles_exactly(ctx: PoolContext) -> bool:
    """Windows that cover the input exactly once: stride == kernel, no padding, sizes divisible."""
    _, hp, wp, _ = ctx.padded_shape
    return (ctx.stride == ctx.kernel and not any(ctx.padding)
            and hp == ctx.out_hw[0] * ctx.kernel[0] and wp == ctx.out_hw[1] * ctx.kernel[1])


def avg_pool2d_forward(x: Any, kernel: Pair, stride: Pair, padding: tuple[int, int, int, int],
                       tanh: bool = False) -> tuple[Any, PoolContext]:
    """Mean over each window, zero padding included in the count (PyTorch's default).

    With ``tanh``, the mean over windows of ``tanh(x)`` (the padding stays zero, as ``tanh(0) = 0``):
    ``tanh(x)`` is kept for the backward pass, which then returns the gradient with respect to ``x``.
    """
    out_hw, slices = _geometry(x, kernel, stride, padding)
    x_padded = B.pad_hw(B.channels_last(x), *padding)
    ctx = PoolContext(tuple(x_padded.shape), kernel, stride, padding, out_hw)
    if tanh:
        ctx.tanh_y, y = B.tanh_window_mean(x_padded, slices, kernel, _tiles_exactly(ctx))
        return B.channels_first(y), ctx
    return B.channels_first(B.window_mean(x_padded, slices, kernel, _tiles_exactly(ctx))), ctx


def avg_pool2d_backward(grad_y: Any, ctx: PoolContext) -> Any:
    """Spread each output gradient evenly over its window (through tanh's gradient after a ``tanh`` forward)."""
    slices = _window_slices(ctx.kernel, ctx.stride, ctx.out_hw)
    dx = B.spread_mean_grad(B.channels_last(grad_y), ctx.padded_shape, ctx.kernel, slices, _tiles_exactly(ctx),
                            ctx.tanh_y)
    return B.channels_first(B.crop_hw(dx, *ctx.padding))
