"""Element-wise passes that NumPy can run faster than the standard's expressions allow.

The Array API has no ``out=``, so ``g * (y > 0)`` makes three passes over memory (compare,
cast, multiply) on one core. For NumPy arrays these helpers write into one output with ufunc
``out=`` (fewer passes) and split the batch axis over the worker threads of
:mod:`xpcnn.backend.threads`; every other backend gets the standard expression.
"""

from __future__ import annotations

from typing import Any

import numpy

from xpcnn.backend import compiled
from xpcnn.backend.namespaces import namespace_of
from xpcnn.backend.threads import split_batch


def relu(x: Any) -> Any:
    """``max(x, 0)``, any shape ``(N, ...)``."""
    if not _fast(x):
        return namespace_of(x).maximum(x, 0.0)
    out = numpy.empty_like(x)
    split_batch(lambda a, b: numpy.maximum(x[a:b], 0.0, out=out[a:b]), x.shape[0], x)
    return out


def relu_grad(grad_y: Any, y: Any) -> Any:
    """``grad_y * (y > 0)`` for same-shape ``(N, ...)`` arrays (a zero output passes no gradient)."""
    if not _fast(grad_y, y):
        xp = namespace_of(grad_y, y)
        # A multiply by a 0/1 mask, not `where`: NumPy's where is ~7x slower than a ufunc here.
        return grad_y * xp.astype(y > 0, grad_y.dtype)
    out = numpy.empty_like(grad_y)

    def part(a: int, b: int) -> None:
        numpy.greater(y[a:b], 0.0, out=out[a:b])
        numpy.multiply(out[a:b], grad_y[a:b], out=out[a:b])
    split_batch(part, grad_y.shape[0], grad_y)
    return out


def tanh_grad(grad_y: Any, y: Any) -> Any:
    """``grad_y * (1 - y * y)`` for same-shape ``(N, ...)`` arrays (tanh's gradient from its output)."""
    if not _fast(grad_y, y):
        return grad_y * (1.0 - y * y)
    out = numpy.empty_like(grad_y)

    def part(a: int, b: int) -> None:
        o = out[a:b]
        numpy.multiply(y[a:b], y[a:b], out=o)
        numpy.subtract(1.0, o, out=o)
        numpy.multiply(o, grad_y[a:b], out=o)
    split_batch(part, grad_y.shape[0], grad_y)
    return out


def multiply(x: Any, factor: Any) -> Any:
    """``x * factor`` for same-shape ``(N, ...)`` arrays (dropout's mask)."""
    if not _fast(x, factor):
        return x * factor
    out = numpy.empty_like(x)
    split_batch(lambda a, b: numpy.multiply(x[a:b], factor[a:b], out=out[a:b]), x.shape[0], x)
    return out


def scaled_mask(keep: Any, scale: float, dtype: Any) -> Any:
    """``scale`` where boolean ``keep`` is True, else 0, as ``dtype`` (dropout's mask), any shape."""
    if not (type(keep) is numpy.ndarray and keep.dtype == numpy.bool_ and keep.ndim > 0):
        xp = namespace_of(keep)
        return xp.astype(keep, dtype) * scale
    # One pass (a cast then a multiply would be two, and a temporary).
    out = numpy.empty_like(keep, dtype=dtype)  # keep's memory order (dropout masks follow x's layout)
    return numpy.multiply(keep, out.dtype.type(scale), out=out)


def adam_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, *, b1: float, b2: float, step_size: float,
              sqrt_bias2: float, eps: float, l2: float = 0.0, keep: float = 1.0) -> bool:
    """An Adam/AdamW step in place, in one compiled pass split over the worker threads, where the
    arrays allow it (contiguous same-shape float NumPy arrays, numba installed): ``param *= keep``
    (decoupled decay), ``grad += l2 * param`` (L2 decay), then the moments and the update in the
    order of ``torch.optim.Adam``. Returns False, touching nothing, where the caller must do it."""
    arrays = (param, grad, exp_avg, exp_avg_sq)
    if not (_fast(*arrays) and all(a.flags.c_contiguous and a.flags.writeable for a in arrays)
            and compiled.available()):
        return False
    p, g, m, v = (a.reshape(-1) for a in arrays)
    split_batch(lambda a, b: compiled.adam_update(p[a:b], g[a:b], m[a:b], v[a:b], b1, b2, step_size,
                                                  sqrt_bias2, eps, l2, keep), p.shape[0], p)
    return True


def _fast(*arrays: Any) -> bool:
    """Same-shape float NumPy arrays (not subclasses, not 0-d)."""
    first = arrays[0]
    return all(type(a) is numpy.ndarray and a.ndim > 0 and a.shape == first.shape and a.dtype == first.dtype
               and a.dtype.kind == "f" for a in arrays)
