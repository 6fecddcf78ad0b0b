"""Pooling's window passes on NumPy: threaded, and compiled where the windows tile the input.

Windows tile the input when the stride equals the window and the windows cover the padded input
exactly (every value in one window): then each pass is one compiled loop over the input
(:mod:`xpcnn.kernels.numpy.compiled`, :mod:`xpcnn.kernels.numpy.meanpool`), split over the worker
threads. Overlapping windows get the max of the slices with one output buffer.
"""

from __future__ import annotations

from typing import Any

import numpy

from xpcnn.kernels.numpy import compiled, meanpool
from xpcnn.kernels.numpy.threads import big, split_batch
from xpcnn.kernels.registry import register
from xpcnn.ops.pool import window_slices
from xpcnn.ops.shapes import Pair


def _float_numpy(*arrays: Any) -> bool:
    return all(type(a) is numpy.ndarray and a.dtype.kind == "f" for a in arrays)


def _tiles(shape: tuple[int, ...], kernel: Pair, stride: Pair, out_hw: Pair) -> bool:
    return tuple(stride) == tuple(kernel) and shape[1] == out_hw[0] * kernel[0] and shape[2] == out_hw[1] * kernel[1]


def _compiled_tiles(*arrays: Any, kernel: Pair, stride: Pair, out_hw: Pair) -> bool:
    """Float NumPy arrays of one dtype, C-contiguous, windows that tile the first one, and numba."""
    return (_float_numpy(*arrays) and all(a.flags.c_contiguous and a.dtype == arrays[0].dtype for a in arrays)
            and _tiles(arrays[0].shape, kernel, stride, out_hw) and compiled.available())


@register("window_max", "numpy", when=lambda x, *_: _float_numpy(x))
def window_max(x: Any, kernel: Pair, stride: Pair, out_hw: Pair) -> Any:
    slices = window_slices(kernel, stride, out_hw)
    out = numpy.empty(x[slices[0]].shape, dtype=x.dtype)

    def part(a: int, b: int) -> None:
        rows = x[a:b]
        numpy.copyto(out[a:b], rows[slices[0]])
        for index in slices[1:]:
            numpy.maximum(out[a:b], rows[index], out=out[a:b])
    split_batch(part, x.shape[0], big(x))
    return out


def _max_grad_tiles(g: Any, x: Any, y: Any, kernel: Pair, stride: Pair, out_hw: Pair) -> bool:
    return _compiled_tiles(x, y, kernel=kernel, stride=stride, out_hw=out_hw) and _float_numpy(g)


@register("max_pool_grad", "numpy", when=_max_grad_tiles)
def max_pool_grad(g: Any, x: Any, y: Any, kernel: Pair, stride: Pair, out_hw: Pair) -> Any:
    out = numpy.empty(x.shape, dtype=g.dtype)
    split_batch(lambda a, b: compiled.max_pool_tiled_grad(x[a:b], y[a:b], g[a:b], kernel, out[a:b]),
                x.shape[0], big(x))
    return out


@register("window_mean", "numpy",
          when=lambda x, kernel, stride, out_hw: _compiled_tiles(x, kernel=kernel, stride=stride, out_hw=out_hw))
def window_mean(x: Any, kernel: Pair, stride: Pair, out_hw: Pair) -> Any:
    out = numpy.empty((x.shape[0], *out_hw, x.shape[3]), dtype=x.dtype)
    split_batch(lambda a, b: meanpool.mean_pool_tiled(x[a:b], kernel, out[a:b]), x.shape[0], big(x))
    return out


@register("mean_pool_grad", "numpy",
          when=lambda g, shape, kernel, stride, out_hw: (_compiled_tiles(g, kernel=(1, 1), stride=(1, 1), out_hw=g.shape[1:3])
                                                         and _tiles(shape, kernel, stride, out_hw)))
def mean_pool_grad(g: Any, padded_shape: tuple[int, int, int, int], kernel: Pair, stride: Pair, out_hw: Pair) -> Any:
    out = numpy.empty(padded_shape, dtype=g.dtype)
    split_batch(lambda a, b: meanpool.mean_pool_tiled_grad(g[a:b], kernel, out[a:b]), g.shape[0], big(out))
    return out


@register("tanh_window_mean", "numpy",
          when=lambda x, kernel, stride, out_hw: _compiled_tiles(x, kernel=kernel, stride=stride, out_hw=out_hw))
def tanh_window_mean(x: Any, kernel: Pair, stride: Pair, out_hw: Pair) -> tuple[Any, Any]:
    """Each worker thread pools its whole share of ``tanh(x)`` right after computing it, while it is in
    cache (pooling every few images' share measured slower: bench/results/optimization-log.md)."""
    y = numpy.empty_like(x)
    out = numpy.empty((x.shape[0], *out_hw, x.shape[3]), dtype=x.dtype)

    def part(a: int, b: int) -> None:
        numpy.tanh(x[a:b], out=y[a:b])
        meanpool.mean_pool_tiled(y[a:b], kernel, out[a:b])
    split_batch(part, x.shape[0], big(x))
    return y, out


@register("tanh_mean_pool_grad", "numpy",
          when=lambda g, tanh_y, kernel, stride, out_hw: (
              _compiled_tiles(tanh_y, kernel=kernel, stride=stride, out_hw=out_hw)
              and _compiled_tiles(g, kernel=(1, 1), stride=(1, 1), out_hw=g.shape[1:3]) and g.dtype == tanh_y.dtype))
def tanh_mean_pool_grad(g: Any, tanh_y: Any, kernel: Pair, stride: Pair, out_hw: Pair) -> Any:
    out = numpy.empty(tanh_y.shape, dtype=g.dtype)
    split_batch(lambda a, b: meanpool.mean_pool_tiled_tanh_grad(g[a:b], tanh_y[a:b], kernel, out[a:b]),
                g.shape[0], big(out))
    return out
