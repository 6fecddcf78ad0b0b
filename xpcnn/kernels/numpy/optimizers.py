"""The Adam/AdamW step in one compiled pass (numba) over parameter, gradient and both moments."""

from __future__ import annotations

from typing import Any

import numpy

from xpcnn.kernels.numpy import compiled
from xpcnn.kernels.numpy.threads import big, split_batch
from xpcnn.kernels.registry import register


def _compiled_in_place(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, **_: Any) -> bool:
    """Contiguous, writeable, same-shape float NumPy arrays of one dtype, and numba installed."""
    arrays = (param, grad, exp_avg, exp_avg_sq)
    return (all(type(a) is numpy.ndarray and a.shape == param.shape and a.dtype == param.dtype
                and a.flags.c_contiguous and a.flags.writeable for a in arrays)
            and param.dtype.kind == "f" and param.ndim > 0 and compiled.available())


@register("adam_step", "numpy", when=_compiled_in_place)
def adam_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, *, b1: float, b2: float, step_size: float,
              sqrt_bias2: float, eps: float, l2: float = 0.0, keep: float = 1.0) -> tuple[Any, Any, Any]:
    p, g, m, v = (a.reshape(-1) for a in (param, grad, exp_avg, exp_avg_sq))
    split_batch(lambda a, b: compiled.adam_update(p[a:b], g[a:b], m[a:b], v[a:b], b1, b2, step_size,
                                                  sqrt_bias2, eps, l2, keep), p.shape[0], big(p))
    return param, exp_avg, exp_avg_sq
