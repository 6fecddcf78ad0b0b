"""The fully connected layer's matrix products split over the worker threads.

While a step runs, OpenBLAS is held to one thread (:func:`xpcnn.kernels.numpy.threads.single_threaded_blas`),
so a large product runs as pieces on the worker threads instead, each piece reading its own share of
the large operands (two threads packing the same weight twice measured slower): the forward pass by
ranges of the input features (partial products, then summed) where those are the largest dimension,
else by rows of the batch; the backward pass by ranges of the input features, which split both the
weight gradient and the input gradient into disjoint column blocks (``matmul(..., out=)``).
"""

from __future__ import annotations

from typing import Any

import numpy

from xpcnn.kernels.numpy.threads import parallel_map, workers, per_worker
from xpcnn.kernels.registry import register
from xpcnn.settings import current


def _worth_splitting(x: Any, weight: Any, *_: Any, products: int = 1, **__: Any) -> bool:
    """Float NumPy arrays of one dtype whose ``products`` products (``2*N*in*out`` FLOPs each) are worth the
    worker threads (the ``split_min_matmul_flops`` setting)."""
    return (type(x) is numpy.ndarray and type(weight) is numpy.ndarray and x.dtype == weight.dtype
            and x.dtype.kind == "f" and x.ndim == 2 and workers() > 1
            and products * 2 * x.shape[0] * weight.shape[0] * weight.shape[1] >= current().split_min_matmul_flops)


@register("linear_forward", "numpy", when=_worth_splitting)
def linear_forward(x: Any, weight: Any, bias: Any | None) -> Any:
    n, features = x.shape
    if features >= max(n, weight.shape[0]):  # partial products over ranges of the input features
        parts = parallel_map(lambda r: x[:, r[0]:r[1]] @ weight[:, r[0]:r[1]].T, per_worker(features))
        y = parts[0]
        for part in parts[1:]:
            y += part
        if bias is not None:
            y += bias
        return y
    y = numpy.empty((n, weight.shape[0]), dtype=x.dtype)

    def rows(r: tuple[int, int]) -> None:
        numpy.matmul(x[r[0]:r[1]], weight.T, out=y[r[0]:r[1]])
        if bias is not None:
            y[r[0]:r[1]] += bias
    parallel_map(rows, per_worker(n))
    return y


def _backward_worth_splitting(grad_y: Any, x: Any, weight: Any, has_bias: bool, need_input_grad: bool = True) -> bool:
    return (type(grad_y) is numpy.ndarray and grad_y.dtype == x.dtype
            and _worth_splitting(x, weight, products=2 if need_input_grad else 1))


@register("linear_backward", "numpy", when=_backward_worth_splitting)
def linear_backward(grad_y: Any, x: Any, weight: Any, has_bias: bool, need_input_grad: bool = True
                    ) -> tuple[Any | None, Any, Any | None]:
    grad_w = numpy.empty(weight.shape, dtype=x.dtype)
    grad_x = numpy.empty(x.shape, dtype=x.dtype) if need_input_grad else None

    def columns(r: tuple[int, int]) -> None:
        numpy.matmul(grad_y.T, x[:, r[0]:r[1]], out=grad_w[:, r[0]:r[1]])
        if grad_x is not None:
            numpy.matmul(grad_y, weight[:, r[0]:r[1]], out=grad_x[:, r[0]:r[1]])
    parallel_map(columns, per_worker(x.shape[1]))
    grad_b = numpy.sum(grad_y, axis=0) if has_bias else None
    return grad_x, grad_w, grad_b
