"""The fully connected layer's matrix products split over the worker threads.

While a step runs, OpenBLAS is held to one thread (:func:`xpcnn.kernels.numpy.threads.single_threaded_blas`),
so a large product runs as pieces on the worker threads instead: the forward pass and the input
gradient by rows of the batch, the weight gradient by rows of the weight. Each piece writes its own
rows of the output (``matmul(..., out=)``).
"""

from __future__ import annotations

from typing import Any

import numpy

from xpcnn.kernels.numpy.threads import parallel_map, workers
from xpcnn.kernels.registry import register
from xpcnn.settings import current


def _worth_splitting(x: Any, weight: Any, *_: Any, **__: Any) -> bool:
    """Float NumPy arrays of one dtype whose product (FLOPs ``2*N*in*out``) is worth the worker threads."""
    return (type(x) is numpy.ndarray and type(weight) is numpy.ndarray and x.dtype == weight.dtype
            and x.dtype.kind == "f" and x.ndim == 2 and workers() > 1
            and 2 * x.shape[0] * weight.shape[0] * weight.shape[1] >= current().split_min_matmul_flops)


def _ranges(n: int) -> list[tuple[int, int]]:
    count = min(workers(), n)
    return [(n * k // count, n * (k + 1) // count) for k in range(count)]


@register("linear_forward", "numpy", when=_worth_splitting)
def linear_forward(x: Any, weight: Any, bias: Any | None) -> Any:
    y = numpy.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)

    def rows(r: tuple[int, int]) -> None:
        numpy.matmul(x[r[0]:r[1]], weight.T, out=y[r[0]:r[1]])
        if bias is not None:
            y[r[0]:r[1]] += bias
    parallel_map(rows, _ranges(x.shape[0]))
    return y


def _backward_worth_splitting(grad_y: Any, x: Any, weight: Any, *_: Any, **__: Any) -> bool:
    return type(grad_y) is numpy.ndarray and grad_y.dtype == x.dtype and _worth_splitting(x, weight)


@register("linear_backward", "numpy", when=_backward_worth_splitting)
def linear_backward(grad_y: Any, x: Any, weight: Any, has_bias: bool, need_input_grad: bool = True
                    ) -> tuple[Any | None, Any, Any | None]:
    grad_w = numpy.empty(weight.shape, dtype=x.dtype)
    grad_x = numpy.empty(x.shape, dtype=x.dtype) if need_input_grad else None

    def weight_rows(r: tuple[int, int]) -> None:
        numpy.matmul(grad_y[:, r[0]:r[1]].T, x, out=grad_w[r[0]:r[1]])

    def input_rows(r: tuple[int, int]) -> None:
        numpy.matmul(grad_y[r[0]:r[1]], weight, out=grad_x[r[0]:r[1]])
    pieces = [(weight_rows, r) for r in _ranges(weight.shape[0])]
    if need_input_grad:
        pieces += [(input_rows, r) for r in _ranges(x.shape[0])]
    parallel_map(lambda piece: piece[0](piece[1]), pieces)
    grad_b = numpy.sum(grad_y, axis=0) if has_bias else None
    return grad_x, grad_w, grad_b
