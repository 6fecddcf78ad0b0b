"""Optional compiled kernels for NumPy arrays (numba), where NumPy needs several passes over memory.

Installed with ``pip install 'xpcnn[fast]'``; without numba (or with ``XPCNN_NUMBA=0``) every
caller keeps its NumPy path, which gives the same results. Kernels compile on first use and
are cached on disk by numba.

- :func:`col2im_into`: the adjoint of im2col in one pass per input row. NumPy adds the
  ``kh * kw`` shifted blocks one by one, reading and writing the whole gradient each time;
  here each row of the gradient is finished while it sits in cache (2x faster on mnist-cnn's
  second convolution).
- :func:`max_pool_tiled_grad`: max-pool backward over windows that tile the input, in one pass
  (NumPy needs a comparison, mask updates and a multiply per kernel offset); used from 32
  channels on, where it is 1.7x faster (with 8-16 channels it is slower than NumPy).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import numpy

#: Set to "0" to leave the compiled kernels unused even where numba is installed.
ENV_SWITCH = "XPCNN_NUMBA"


def available() -> bool:
    """True when numba can be imported and ``$XPCNN_NUMBA`` is not ``0``."""
    return os.environ.get(ENV_SWITCH, "1") != "0" and _numba() is not None


@cache
def _numba() -> Any:
    try:
        import numba
    except ImportError:
        return None
    return numba


@cache
def _col2im_kernel() -> Any:
    numba = _numba()

    @numba.njit(cache=True, fastmath=True)
    def col2im(blocks, out, first, kh, kw, sh, sw, dh, dw):  # pragma: no cover - compiled
        _, n, ho, wo, c = blocks.shape
        hp = out.shape[1]
        for b in range(n):
            for r in range(hp):
                row = out[first + b, r]
                for i in range(kh):
                    offset = r - i * dh
                    if offset < 0 or offset % sh != 0 or offset // sh >= ho:
                        continue
                    y = offset // sh
                    for j in range(kw):
                        block = blocks[i * kw + j, b, y]
                        for w in range(wo):
                            target = row[w * sw + j * dw]
                            source = block[w]
                            for ch in range(c):
                                target[ch] += source[ch]
        return out

    return col2im


def col2im_into(blocks: Any, out: Any, first: int, kernel: tuple[int, int], stride: tuple[int, int],
                dilation: tuple[int, int]) -> Any:
    """Add offset-major blocks ``(kh*kw, n, Ho, Wo, C)`` into images ``first:first+n`` of ``out``
    ``(N, Hp, Wp, C)`` (both float NumPy arrays of one dtype, C-contiguous), as
    :func:`xpcnn.backend.windows.col2im` does; returns ``out``."""
    return _col2im_kernel()(blocks, out, first, kernel[0], kernel[1], stride[0], stride[1], dilation[0], dilation[1])


@cache
def _max_pool_kernel() -> Any:
    numba = _numba()

    @numba.njit(cache=True)
    def route(x, y, g, out, kh, kw):  # pragma: no cover - compiled
        n, ho, wo, c = y.shape
        done = numpy.zeros(c, dtype=numpy.bool_)  # per channel: has this window's gradient been routed?
        for b in range(n):
            for oy in range(ho):
                for ox in range(wo):
                    done[:] = False
                    top, grad = y[b, oy, ox], g[b, oy, ox]
                    for k in range(kh * kw):
                        xrow = x[b, oy * kh + k // kw, ox * kw + k % kw]
                        orow = out[b, oy * kh + k // kw, ox * kw + k % kw]
                        last = k == kh * kw - 1  # no earlier maximum (a NaN window): the last offset takes it
                        for ch in range(c):
                            if not done[ch] and (last or xrow[ch] == top[ch]):
                                orow[ch] = grad[ch]
                                done[ch] = True
                            else:
                                orow[ch] = 0.0
        return out

    return route


def max_pool_tiled_grad(x: Any, y: Any, g: Any, kernel: tuple[int, int]) -> Any:
    """Gradient of a max over windows that tile channel-last ``x`` ``(N, Hp, Wp, C)`` exactly, given the
    output ``y`` and its gradient ``g`` ``(N, Ho, Wo, C)``: each window's first maximum (row-major) takes it."""
    out = numpy.empty(x.shape, dtype=g.dtype)
    return _max_pool_kernel()(x, y, numpy.ascontiguousarray(g), out, kernel[0], kernel[1])


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel for float32, so a measurement that follows
    sees neither the compile time nor the compiler's memory (a one-time cost of the process)."""
    if not available():
        return
    blocks = numpy.zeros((1, 1, 1, 1, 1), numpy.float32)
    col2im_into(blocks, numpy.zeros((1, 1, 1, 1), numpy.float32), 0, (1, 1), (1, 1), (1, 1))
    x = numpy.zeros((1, 1, 1, 1), numpy.float32)
    max_pool_tiled_grad(x, x, x, (1, 1))
