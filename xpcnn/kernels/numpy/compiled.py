"""Compiled kernels for NumPy arrays (numba), where NumPy needs several passes over memory.

A dependency of xpcnn; without numba the kernels that need it do not apply
and the other NumPy kernels or the reference ops run, with the same results. Kernels compile on
first use and are cached on disk by numba.

- :func:`col2im_into`: the adjoint of im2col in one pass per input row, straight from the
  patch matrix's gradient (one GEMM). NumPy needs offset-major blocks (``kh * kw`` smaller
  GEMMs) and adds them one by one, reading and writing the whole gradient each time; here each
  row of the gradient is finished while it sits in cache.
- :func:`max_pool_tiled_grad`: max-pool backward over windows that tile the input, in one pass
  (NumPy needs a comparison, mask updates and a multiply per kernel offset).
- :func:`adam_update`: an Adam/AdamW step in one pass over parameter, gradient and both moment
  slots, instead of a dozen whole-array NumPy passes.
"""

from __future__ import annotations

import warnings
from functools import cache
from typing import Any

import numpy

#: LLVM tunes Intel's and AMD's AVX-512 CPUs to prefer 256-bit vectors; this feature flag lifts that.
_WIDE_TUNING = "-prefer-256-bit"


def available() -> bool:
    """True when numba can be imported."""
    return _numba() is not None


@cache
def _numba() -> Any:
    try:
        import numba
    except ImportError:
        warnings.warn("numba is not installed, so the NumPy kernels run without compiled loops (several times "
                      "slower on CPU); install it with: pip install numba", RuntimeWarning, stacklevel=2)
        return None
    return numba


def enable_wide_vectors() -> bool:
    """Let numba's code use 512-bit vectors on CPUs with AVX-512; returns whether they are on.

    LLVM prefers 256-bit vectors there by default, which halves the direct convolution kernels'
    arithmetic per instruction and their register file (bench/results/optimization-log.md, step 41).
    The choice belongs to numba's whole
    process (its one code generator), so xpcnn never makes it on import: this explicit call sets
    numba's ``CPU_FEATURES`` to the host's features plus ``-prefer-256-bit``. It must come before
    anything in the process compiles numba code; later (or where ``NUMBA_CPU_FEATURES`` is set, or on a
    CPU without AVX-512, or without numba) it changes nothing. The ``xpcnn`` command calls it.
    """
    numba = _numba()
    if numba is None:
        return False
    config = numba.core.config
    from numba.core import registry
    if config.CPU_FEATURES is None and "_toplevel_target_context" not in vars(registry.cpu_target):
        import llvmlite.binding as llvm
        features = llvm.get_host_cpu_features().flatten()
        if "+avx512f" in features.split(","):
            config.CPU_FEATURES = f"{features},{_WIDE_TUNING}"
    return vector_lanes() == 16


def vector_lanes(itemsize: int = 4) -> int:
    """Values of ``itemsize`` bytes in one vector register of numba's compiled code: 512 bits where
    numba's CPU features allow AVX-512 without preferring 256 bits (:func:`enable_wide_vectors`), else 256."""
    numba = _numba()
    features = (numba.core.config.CPU_FEATURES or "").split(",") if numba is not None else []
    wide = "+avx512f" in features and _WIDE_TUNING in features
    return (64 if wide else 32) // itemsize


@cache
def _col2im_kernel() -> Any:
    numba = _numba()

    @numba.njit(cache=True, fastmath=True, nogil=True)
    def col2im(patches, out, first, kh, kw, sh, sw, dh, dw):  # pragma: no cover - compiled
        n, ho, wo, _, c = patches.shape
        hp = out.shape[1]
        for b in range(n):
            for r in range(hp):
                row = out[first + b, r]
                for i in range(kh):
                    offset = r - i * dh
                    if offset < 0 or offset % sh != 0 or offset // sh >= ho:
                        continue
                    y = offset // sh
                    for w in range(wo):
                        window = patches[b, y, w]
                        for j in range(kw):
                            target = row[w * sw + j * dw]
                            source = window[i * kw + j]
                            for ch in range(c):
                                target[ch] += source[ch]
        return out

    return col2im


def col2im_into(patches: Any, out: Any, first: int, kernel: tuple[int, int], stride: tuple[int, int],
                dilation: tuple[int, int]) -> Any:
    """Add patch gradients ``(n, Ho, Wo, kh*kw, C)`` (the rows of an im2col patch matrix) into images
    ``first:first+n`` of ``out`` ``(N, Hp, Wp, C)`` (float NumPy arrays of one dtype, C-contiguous),
    the adjoint of :func:`xpcnn.backend.windows.im2col`; returns ``out``."""
    return _col2im_kernel()(patches, out, first, kernel[0], kernel[1], stride[0], stride[1], dilation[0], dilation[1])


@cache
def _max_pool_kernel() -> Any:
    numba = _numba()

    # Output row by output row: ``pending`` holds the gradient of a whole row of windows that no offset
    # has taken yet, and the inner loop runs over channels with branch-free selects, so LLVM vectorizes
    # it at any channel count; nested offset loops (no integer division per window) keep few channels fast.
    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def route(x, y, g, out, kh, kw):  # pragma: no cover - compiled
        n, ho, wo, c = y.shape
        zero = g.dtype.type(0)
        pending = numpy.empty((wo, c), dtype=g.dtype)
        for b in range(n):
            for oy in range(ho):
                pending[:, :] = g[b, oy]
                top = y[b, oy]
                for i in range(kh):
                    xrow = x[b, oy * kh + i]
                    orow = out[b, oy * kh + i]
                    for ox in range(wo):
                        for j in range(kw):
                            # no earlier maximum (a NaN window): the last offset takes it
                            last = i == kh - 1 and j == kw - 1
                            for ch in range(c):
                                v = pending[ox, ch]
                                hit = last or xrow[ox * kw + j, ch] == top[ox, ch]
                                orow[ox * kw + j, ch] = v if hit else zero
                                pending[ox, ch] = zero if hit else v
        return out

    return route


def max_pool_tiled_grad(x: Any, y: Any, g: Any, kernel: tuple[int, int], out: Any = None) -> Any:
    """Gradient of a max over windows that tile channel-last ``x`` ``(N, Hp, Wp, C)`` exactly, given the
    output ``y`` and its gradient ``g`` ``(N, Ho, Wo, C)``: each window's first maximum (row-major) takes it.
    Written into ``out`` (like ``x``, C-contiguous) when given."""
    out = numpy.empty(x.shape, dtype=g.dtype) if out is None else out
    return _max_pool_kernel()(x, y, numpy.ascontiguousarray(g), out, kernel[0], kernel[1])


@cache
def _adam_kernel() -> Any:
    numba = _numba()

    # error_model="numpy": IEEE division (no ZeroDivisionError check), which lets LLVM vectorize (4.5x).
    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def adam(p, g, m, v, b1, b2, step_size, sqrt_bias2, eps, l2, keep):  # pragma: no cover - compiled
        one = p.dtype.type(1.0)
        for i in range(p.size):
            if keep != one:
                p[i] *= keep
            gi = g[i] + l2 * p[i] if l2 != 0 else g[i]
            mi = m[i] * b1 + (one - b1) * gi
            vi = v[i] * b2 + (one - b2) * (gi * gi)
            m[i] = mi
            v[i] = vi
            p[i] -= (mi / (numpy.sqrt(vi) / sqrt_bias2 + eps)) * step_size

    return adam


def adam_update(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, b1: float, b2: float, step_size: float,
                sqrt_bias2: float, eps: float, l2: float, keep: float) -> None:
    """One Adam step in place over flat float NumPy arrays of one dtype, in one pass, in that dtype:
    ``p *= keep; g' = g + l2 * p; m = b1*m + (1-b1)*g'; v = b2*v + (1-b2)*g'^2;
    p -= step_size * m / (sqrt(v) / sqrt_bias2 + eps)`` (the order of ``torch.optim.Adam``)."""
    scalar = param.dtype.type
    _adam_kernel()(param, grad, exp_avg, exp_avg_sq, scalar(b1), scalar(b2), scalar(step_size),
                   scalar(sqrt_bias2), scalar(eps), scalar(l2), scalar(keep))


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel for float32, so a measurement that follows
    sees neither the compile time nor the compiler's memory (a one-time cost of the process)."""
    if not available():
        return
    patches = numpy.zeros((1, 1, 1, 1, 1), numpy.float32)
    col2im_into(patches, numpy.zeros((1, 1, 1, 1), numpy.float32), 0, (1, 1), (1, 1), (1, 1))
    x = numpy.zeros((1, 1, 1, 1), numpy.float32)
    max_pool_tiled_grad(x, x, x, (1, 1))
    flat = numpy.zeros(1, numpy.float32)
    adam_update(flat, flat, flat, flat, 0.9, 0.999, 1e-3, 1.0, 1e-8, 0.0, 1.0)
    from xpcnn.kernels.numpy import batchnorm  # it imports this module
    batchnorm.warm_up()
