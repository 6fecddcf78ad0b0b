"""BatchNorm2D's forward and backward for NumPy arrays: two compiled passes each, over the worker threads.

The reference (:mod:`xpcnn.ops.normalization`) reduces on one core and makes a full-size temporary per
operation. Here each pass reads the input once: the forward sums each channel's values and squares (float64,
shifted by the channel's first value so the variance keeps its digits), then writes ``y`` (``max(y, 0)`` with
a folded ReLU); the backward sums ``g`` and ``g * x_hat`` per channel, then writes the input gradient. The
backward recomputes ``x_hat`` from ``x`` (one full-size array less to write and read back) and, with a folded
ReLU, masks ``g`` where ``y <= 0`` (the ReLU layer's own pass, gone). Each worker thread
takes a contiguous range of rows (channel-last input, ``(N*H*W, C)``) or of planes (channel-first input,
``(N*C, H*W)``) and keeps its own per-channel sums, which the caller adds. Outputs keep the input's memory
order; the context is the reference's (:class:`~xpcnn.ops.normalization.BatchNormContext`), so either
backward runs after either forward.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy

from xpcnn.kernels.numpy import compiled
from xpcnn.kernels.numpy.threads import parallel_map, per_worker
from xpcnn.kernels.registry import register
from xpcnn.ops.normalization import BatchNormContext, updated_running_stats


def _layout(x: Any) -> str | None:
    """``"rows"`` for channel-last memory (a transposed C-contiguous ``(N, H, W, C)``), ``"planes"`` for
    C-contiguous ``(N, C, H, W)``, None otherwise (the reference runs)."""
    if x.flags.c_contiguous:
        return "planes"
    if x.transpose(0, 2, 3, 1).flags.c_contiguous:
        return "rows"
    return None


def _float4d(x: Any) -> bool:
    return type(x) is numpy.ndarray and x.ndim == 4 and x.dtype.kind == "f" and x.size > 0


def _forward_applies(x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any, *_: Any, **__: Any) -> bool:
    c = x.shape[1] if getattr(x, "ndim", 0) == 4 else -1
    return (compiled.available() and _float4d(x) and _layout(x) is not None
            and all(type(a) is numpy.ndarray and a.shape == (c,) and a.dtype == x.dtype
                    for a in (gamma, beta, running_mean, running_var)))


def _backward_applies(grad_y: Any, gamma: Any, ctx: Any) -> bool:
    x, y = getattr(ctx, "x", None), getattr(ctx, "y", None)
    return (compiled.available() and _float4d(grad_y) and type(x) is numpy.ndarray
            and x.shape == grad_y.shape and x.dtype == grad_y.dtype and _layout(x) is not None
            and (y is None or (type(y) is numpy.ndarray and y.shape == x.shape and _layout(y) == _layout(x)))
            and all(type(a) is numpy.ndarray and a.shape == (grad_y.shape[1],) and a.dtype == grad_y.dtype
                    for a in (gamma, ctx.mean, ctx.inv_std)))


def _flat(x: Any, layout: str) -> Any:
    """The 2-D C-contiguous view the kernels walk: ``(N*H*W, C)`` rows or ``(N*C, H*W)`` planes."""
    n, c, h, w = x.shape
    return x.transpose(0, 2, 3, 1).reshape(n * h * w, c) if layout == "rows" else x.reshape(n * c, h * w)


def _like(x: Any, layout: str) -> tuple[Any, Any]:
    """A new array of ``x``'s shape, dtype and memory order, and its :func:`_flat` view."""
    n, c, h, w = x.shape
    if layout == "rows":
        out = numpy.empty((n, h, w, c), dtype=x.dtype).transpose(0, 3, 1, 2)
    else:
        out = numpy.empty(x.shape, dtype=x.dtype)
    return out, _flat(out, layout)


def _sums(kernel: Any, rows: int, c: int, args: Any) -> Any:
    """The float64 ``(2, C)`` per-channel sums that ``kernel(*args(i, j), i, sums)`` adds over each worker's
    range ``i:j`` of ``rows`` (the range's first row ``i``: planes find their channel from it)."""
    def part(bounds: tuple[int, int]) -> Any:
        i, j = bounds
        sums = numpy.zeros((2, c), dtype=numpy.float64)
        kernel(*args(i, j), i, sums)
        return sums
    return numpy.sum(parallel_map(part, per_worker(rows)), axis=0)


@register("batch_norm2d_forward", "numpy", when=_forward_applies)
def batch_norm2d_forward(x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any, training: bool,
                         momentum: float = 0.1, eps: float = 1e-5, relu: bool = False
                         ) -> tuple[Any, Any, Any, BatchNormContext]:
    layout = _layout(x)
    n, c, h, w = x.shape
    count = n * h * w
    flat = _flat(x, layout)
    kernels = _kernels()
    if training:
        shift = numpy.ascontiguousarray(x[0, :, 0, 0], dtype=numpy.float64)
        total, squares = _sums(kernels["stats_" + layout], flat.shape[0], c, lambda i, j: (flat[i:j], shift))
        centered = total / count
        mean = (shift + centered).astype(x.dtype)
        var = numpy.maximum(squares / count - centered * centered, 0.0).astype(x.dtype)
        running_mean, running_var = updated_running_stats(running_mean, running_var, mean, var, count, momentum)
    else:
        mean, var = running_mean, running_var
    inv_std = (1.0 / numpy.sqrt(var + eps)).astype(x.dtype)
    y, y_flat = _like(x, layout)
    apply = kernels["normalize_" + layout]

    def part(bounds: tuple[int, int]) -> None:
        i, j = bounds
        apply(flat[i:j], mean, inv_std, gamma, beta, bool(relu), i, y_flat[i:j])
    parallel_map(part, per_worker(flat.shape[0]))
    return y, running_mean, running_var, BatchNormContext(x, mean, inv_std, count, training, y if relu else None)


@register("batch_norm2d_backward", "numpy", when=_backward_applies)
def batch_norm2d_backward(grad_y: Any, gamma: Any, ctx: BatchNormContext) -> tuple[Any, Any, Any]:
    layout = _layout(ctx.x)
    c = gamma.shape[0]
    x = _flat(ctx.x, layout)
    relu = ctx.y is not None
    if _layout(grad_y) != layout:  # one copy into x's memory order
        grad_y = numpy.ascontiguousarray(grad_y.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if layout == "rows" \
            else numpy.ascontiguousarray(grad_y)
    g = _flat(grad_y, layout)
    y = _flat(ctx.y, layout) if relu else g  # (without a ReLU, a placeholder the kernels never read)
    kernels = _kernels()
    total, products = _sums(kernels["grads_" + layout], g.shape[0], c,
                            lambda i, j: (g[i:j], x[i:j], y[i:j], ctx.mean, ctx.inv_std, relu))
    grad_beta, grad_gamma = total.astype(gamma.dtype), products.astype(gamma.dtype)
    scale = gamma * ctx.inv_std
    if ctx.training:
        mean_g, mean_gx = grad_beta / ctx.count, grad_gamma / ctx.count
    else:
        mean_g = mean_gx = numpy.zeros_like(scale)
    grad_x, out = _like(ctx.x, layout)
    apply = kernels["input_grad_" + layout]

    def part(bounds: tuple[int, int]) -> None:
        i, j = bounds
        apply(g[i:j], x[i:j], y[i:j], ctx.mean, ctx.inv_std, relu, scale, mean_g, mean_gx, i, out[i:j])
    parallel_map(part, per_worker(g.shape[0]))
    return grad_x, grad_gamma, grad_beta


def warm_up() -> None:
    """Compile (or load from numba's cache) every pass for float32 in both memory orders, training mode."""
    for channel_last in (True, False):
        x = numpy.ones((2, 3, 2, 2), numpy.float32)
        x = numpy.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if channel_last else x
        stats = numpy.ones(3, numpy.float32)
        for relu in (False, True):
            y, _, _, ctx = batch_norm2d_forward(x, stats, stats, stats, stats, True, relu=relu)
            batch_norm2d_backward(y, stats, ctx)


@cache
def _kernels() -> dict[str, Any]:
    """The compiled passes, by name ``<pass>_<layout>``; each walks a range of a flat array's rows and finds
    a row's channel from ``first`` (the range's first row in the whole array) where the layout needs it."""
    numba = compiled._numba()
    jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
    # The planes' float64 sums over a row may be reassociated (so they vectorize): float64 has digits to spare.
    jit_sum = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "reassoc"})

    @jit
    def stats_rows(a, shift, first, sums):  # pragma: no cover - compiled
        rows, c = a.shape
        for r in range(rows):
            for ch in range(c):
                d = numpy.float64(a[r, ch]) - shift[ch]
                sums[0, ch] += d
                sums[1, ch] += d * d

    @jit_sum
    def stats_planes(a, shift, first, sums):  # pragma: no cover - compiled
        rows, s = a.shape
        c = shift.shape[0]
        for r in range(rows):
            ch = (first + r) % c
            k = shift[ch]
            s1 = 0.0
            s2 = 0.0
            for p in range(s):
                d = numpy.float64(a[r, p]) - k
                s1 += d
                s2 += d * d
            sums[0, ch] += s1
            sums[1, ch] += s2

    # Backward: g masked by a folded ReLU (g * 0 in g's dtype where y <= 0, NaN for an infinite g, as the ReLU
    # layer's product) and x_hat recomputed from x with the forward pass's float32 expression, so both equal what
    # the unfused layers would see. Written out in each pass: kernels that call a jitted helper defined in here
    # missed numba's cache in every new process (measured: 4 passes recompiled, warm_up 0.66 -> 1.6 s).
    @jit
    def grads_rows(g, x, y, mean, inv_std, relu, first, sums):  # pragma: no cover - compiled
        rows, c = g.shape
        for r in range(rows):
            for ch in range(c):
                v = g[r, ch]
                v = v if not relu or y[r, ch] > 0 else v - v
                x_hat = (x[r, ch] - mean[ch]) * inv_std[ch]
                sums[0, ch] += numpy.float64(v)
                sums[1, ch] += numpy.float64(v) * numpy.float64(x_hat)

    @jit_sum
    def grads_planes(g, x, y, mean, inv_std, relu, first, sums):  # pragma: no cover - compiled
        rows, s = g.shape
        c = mean.shape[0]
        for r in range(rows):
            ch = (first + r) % c
            m, k = mean[ch], inv_std[ch]
            s1 = 0.0
            s2 = 0.0
            for p in range(s):
                v = g[r, p]
                v = v if not relu or y[r, p] > 0 else v - v
                x_hat = (x[r, p] - m) * k
                s1 += numpy.float64(v)
                s2 += numpy.float64(v) * numpy.float64(x_hat)
            sums[0, ch] += s1
            sums[1, ch] += s2

    @jit
    def normalize_rows(x, mean, inv_std, gamma, beta, relu, first, y):  # pragma: no cover - compiled
        rows, c = x.shape
        for r in range(rows):
            for ch in range(c):
                v = ((x[r, ch] - mean[ch]) * inv_std[ch]) * gamma[ch] + beta[ch]
                y[r, ch] = 0 if relu and v < 0 else v  # NaN stays NaN, as in NumPy's maximum

    @jit
    def normalize_planes(x, mean, inv_std, gamma, beta, relu, first, y):  # pragma: no cover - compiled
        rows, s = x.shape
        c = mean.shape[0]
        for r in range(rows):
            ch = (first + r) % c
            m, k, gm, bt = mean[ch], inv_std[ch], gamma[ch], beta[ch]
            for p in range(s):
                v = ((x[r, p] - m) * k) * gm + bt
                y[r, p] = 0 if relu and v < 0 else v

    @jit
    def input_grad_rows(g, x, y, mean, inv_std, relu, scale, mean_g, mean_gx, first, out):  # pragma: no cover
        rows, c = g.shape
        for r in range(rows):
            for ch in range(c):
                v = g[r, ch]
                v = v if not relu or y[r, ch] > 0 else v - v
                x_hat = (x[r, ch] - mean[ch]) * inv_std[ch]
                out[r, ch] = scale[ch] * (v - mean_g[ch] - x_hat * mean_gx[ch])

    @jit
    def input_grad_planes(g, x, y, mean, inv_std, relu, scale, mean_g, mean_gx, first, out):  # pragma: no cover
        rows, s = g.shape
        c = scale.shape[0]
        for r in range(rows):
            ch = (first + r) % c
            a, mg, mgx, m, k = scale[ch], mean_g[ch], mean_gx[ch], mean[ch], inv_std[ch]
            for p in range(s):
                v = g[r, p]
                v = v if not relu or y[r, p] > 0 else v - v
                x_hat = (x[r, p] - m) * k
                out[r, p] = a * (v - mg - x_hat * mgx)

    return {"stats_rows": stats_rows, "stats_planes": stats_planes, "grads_rows": grads_rows,
            "grads_planes": grads_planes, "normalize_rows": normalize_rows, "normalize_planes": normalize_planes,
            "input_grad_rows": input_grad_rows, "input_grad_planes": input_grad_planes}
