"""Element-wise passes that NumPy runs faster than the standard's expressions allow.

The Array API has no ``out=``, so ``g * (y > 0)`` makes three passes over memory (compare, cast,
multiply) on one core. These kernels write into one output with ufunc ``out=`` (fewer passes) and
split large arrays' batch axis over the worker threads (:mod:`xpcnn.kernels.numpy.threads`).
Outputs keep the input's memory order (channel-last activations stay channel-last).
"""

from __future__ import annotations

from typing import Any

import numpy

from xpcnn.kernels.numpy.threads import big, split_batch
from xpcnn.kernels.registry import register


def float_arrays(*arrays: Any, **_: Any) -> bool:
    """Same-shape, same-dtype float NumPy arrays (not subclasses, not 0-d) among the leading arguments."""
    first = arrays[0]
    return all(type(a) is numpy.ndarray and a.ndim > 0 and a.shape == first.shape and a.dtype == first.dtype
               and a.dtype.kind == "f" for a in arrays if not isinstance(a, (int, float, numpy.dtype, type)))


@register("relu", "numpy", when=float_arrays)
def relu(x: Any) -> Any:
    out = numpy.empty_like(x)
    split_batch(lambda a, b: numpy.maximum(x[a:b], 0.0, out=out[a:b]), x.shape[0], big(x))
    return out


@register("relu_grad", "numpy", when=float_arrays)
def relu_grad(grad_y: Any, y: Any) -> Any:
    out = numpy.empty_like(grad_y)

    def part(a: int, b: int) -> None:
        numpy.greater(y[a:b], 0.0, out=out[a:b])
        numpy.multiply(out[a:b], grad_y[a:b], out=out[a:b])
    split_batch(part, grad_y.shape[0], big(grad_y))
    return out


def _writable_alone(total: Any, more: Any, protected: Any = None) -> bool:
    """``total`` and ``more`` float arrays of one shape and dtype, and ``total`` writable and sharing no memory
    with ``more`` or ``protected``."""
    return (float_arrays(total, more) and total.flags.writeable and not numpy.may_share_memory(total, more)
            and (protected is None or not numpy.may_share_memory(total, protected)))


@register("accumulate", "numpy", when=_writable_alone)
def accumulate(total: Any, more: Any, protected: Any = None) -> Any:
    split_batch(lambda a, b: numpy.add(total[a:b], more[a:b], out=total[a:b]), total.shape[0], big(total))
    return total


@register("tanh_grad", "numpy", when=float_arrays)
def tanh_grad(grad_y: Any, y: Any) -> Any:
    out = numpy.empty_like(grad_y)

    def part(a: int, b: int) -> None:
        o = out[a:b]
        numpy.multiply(y[a:b], y[a:b], out=o)
        numpy.subtract(1.0, o, out=o)
        numpy.multiply(o, grad_y[a:b], out=o)
    split_batch(part, grad_y.shape[0], big(grad_y))
    return out


@register("dropout_apply", "numpy", when=float_arrays)
def multiply(x: Any, factor: Any) -> Any:
    out = numpy.empty_like(x)
    split_batch(lambda a, b: numpy.multiply(x[a:b], factor[a:b], out=out[a:b]), x.shape[0], big(x))
    return out


def _bool_array(keep: Any, *_: Any) -> bool:
    return type(keep) is numpy.ndarray and keep.dtype == numpy.bool_ and keep.ndim > 0


@register("dropout_mask", "numpy", when=_bool_array)
def scaled_mask(keep: Any, p: float, dtype: Any) -> Any:
    # One pass (a cast then a multiply would be two, and a temporary), in keep's memory order.
    out = numpy.empty_like(keep, dtype=dtype)
    return numpy.multiply(keep, out.dtype.type(1.0 / (1.0 - p)), out=out)
