"""An activation and the pooling layer after it as one op pair: the values and gradients of the two
apart, with fewer passes over memory. ``Sequential`` plans them (:data:`xpcnn.model.FUSIONS`).

- ReLU then max-pool: the max of ``relu(x)`` over a window is ``relu`` of the window's max (ReLU is
  monotone), so ReLU runs on the ``kh*kw`` times smaller pooled array; the backward pass masks the
  pooled gradient, then routes it to each window's first maximum of ``x``, which is ``relu(x)``'s
  wherever the maximum is positive (elsewhere ReLU passes no gradient at all).
- tanh then average pool: ``tanh(x)`` is kept for the backward pass, where tanh's gradient
  ``1 - y*y`` is applied while spreading (on NumPy, in the pool's compiled pass).
"""

from __future__ import annotations

from typing import Any

from xpcnn import backend as B
from xpcnn.kernels import dispatch
from xpcnn.ops.activations import relu_backward, relu_forward, tanh_backward
from xpcnn.ops.pool import PoolContext, max_pool2d_forward, max_pool_grad, mean_pool_grad, pool_geometry, window_mean
from xpcnn.ops.shapes import Pair, Padding


def relu_max_pool2d_forward(x: Any, kernel: Pair, stride: Pair, padding: Padding) -> tuple[Any, PoolContext]:
    """``max_pool2d(relu(x))``, ``(N, C, H, W)`` -> ``(N, C, Ho, Wo)``, computed as ``relu(max_pool2d(x))``."""
    y, ctx = max_pool2d_forward(x, kernel, stride, padding)
    return relu_forward(y), ctx


def relu_max_pool2d_backward(grad_y: Any, ctx: PoolContext) -> Any:
    """Gradient with respect to ``x`` of :func:`relu_max_pool2d_forward`, ReLU's included: the pooled
    gradient where the window's maximum ``ctx.y`` is positive, routed to that maximum (channel-last
    throughout: the mask and the gradient share one memory order)."""
    g = relu_backward(B.channels_last(grad_y), ctx.y)
    dx = max_pool_grad(g, ctx.x_padded, ctx.y, ctx.kernel, ctx.stride, ctx.out_hw)
    return B.channels_first(B.crop_hw(dx, *ctx.padding))


def tanh_avg_pool2d_forward(x: Any, kernel: Pair, stride: Pair, padding: Padding) -> tuple[Any, PoolContext]:
    """``avg_pool2d(tanh(x))`` (the zero padding stays zero, as ``tanh(0) = 0``); ``tanh(x)`` is kept."""
    x_padded, ctx = pool_geometry(x, kernel, stride, padding)
    ctx.y, pooled = tanh_window_mean(x_padded, kernel, stride, ctx.out_hw)
    return B.channels_first(pooled), ctx


def tanh_avg_pool2d_backward(grad_y: Any, ctx: PoolContext) -> Any:
    """Gradient with respect to ``x`` of :func:`tanh_avg_pool2d_forward`, tanh's included."""
    dx = tanh_mean_pool_grad(B.channels_last(grad_y), ctx.y, ctx.kernel, ctx.stride, ctx.out_hw)
    return B.channels_first(B.crop_hw(dx, *ctx.padding))


@dispatch("tanh_window_mean")
def tanh_window_mean(x: Any, kernel: Pair, stride: Pair, out_hw: Pair) -> tuple[Any, Any]:
    """``(tanh(x), window_mean(tanh(x)))`` for channel-last ``x`` ``(N, Hp, Wp, C)``."""
    y = B.namespace_of(x).tanh(x)
    return y, window_mean(y, kernel, stride, out_hw)


@dispatch("tanh_mean_pool_grad")
def tanh_mean_pool_grad(g: Any, tanh_y: Any, kernel: Pair, stride: Pair, out_hw: Pair) -> Any:
    """Gradient with respect to ``x`` of :func:`tanh_window_mean`'s pooled output, given ``tanh_y = tanh(x)``."""
    return tanh_backward(mean_pool_grad(g, tuple(tanh_y.shape), kernel, stride, out_hw), tanh_y)
