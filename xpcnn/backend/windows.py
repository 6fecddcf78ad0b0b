"""Strided windows (im2col) and their adjoint (col2im): what the Array API standard lacks.

Everything here works on channel-last arrays ``(N, H, W, C)``: a window's ``kw * C`` values
then lie next to each other in memory, so gathering them is a run of long contiguous copies.
im2col has a fast path for backends with strided views (NumPy, CuPy, PyTorch) and a
standard-only fallback built from strided slices (JAX, array_api_strict, anything else).
col2im needs no scatter-add: for one kernel offset the target positions never repeat, so it
is ``kh * kw`` strided-slice additions (functional ``.at[].add`` on immutable JAX arrays).
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from xpcnn.backend import compiled, pooling
from xpcnn.backend.elementwise import tanh_grad
from xpcnn.backend.namespaces import is_jax, namespace_of
from xpcnn.backend.threads import split_batch


def channels_last(x: Any) -> Any:
    """Logical ``(N, C, H, W)`` array ``x`` as an ``(N, H, W, C)`` array, contiguous if the backend has layouts."""
    xp = namespace_of(x)
    y = xp.permute_dims(x, (0, 2, 3, 1))
    if array_api_compat.is_numpy_array(y):
        import numpy
        return numpy.ascontiguousarray(y)
    if array_api_compat.is_cupy_array(y):
        import cupy
        return cupy.ascontiguousarray(y)
    if array_api_compat.is_torch_array(y):
        return y.contiguous()
    return y


def channels_first(x: Any) -> Any:
    """``(N, H, W, C)`` array as a logical ``(N, C, H, W)`` array (a view where the backend has views)."""
    xp = namespace_of(x)
    return xp.permute_dims(x, (0, 3, 1, 2))


def add_at(target: Any, index: tuple, value: Any) -> Any:
    """``target[index] += value``, returning the result (a new array on immutable JAX)."""
    if is_jax(namespace_of(target)):
        return target.at[index].add(value)
    target[index] += value
    return target


def pad_hw(x: Any, top: int, bottom: int, left: int, right: int, value: float = 0.0) -> Any:
    """Pad the H and W axes of ``(N, H, W, C)`` array ``x`` with ``value`` (zero by default)."""
    if not (top or bottom or left or right):
        return x
    xp = namespace_of(x)
    n, h, w, c = x.shape
    out = xp.full((n, h + top + bottom, w + left + right, c), value, dtype=x.dtype,
                  device=array_api_compat.device(x))
    index = (slice(None), slice(top, top + h), slice(left, left + w), slice(None))
    if is_jax(xp):
        return out.at[index].set(x)
    out[index] = x
    return out


def crop_hw(x: Any, top: int, bottom: int, left: int, right: int) -> Any:
    """Inverse of :func:`pad_hw`: drop border rows and columns of ``(N, H, W, C)`` array ``x``."""
    if not (top or bottom or left or right):
        return x
    _, h, w, _ = x.shape
    return x[:, top:h - bottom, left:w - right, :]


def window_index(i: int, j: int, out_hw: tuple[int, int], stride: tuple[int, int],
                 dilation: tuple[int, int]) -> tuple:
    """Index of the ``(N, Ho, Wo, C)`` strided slice that kernel offset ``(i, j)`` reads."""
    (ho, wo), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return (slice(None),
            slice(i * dh, i * dh + sh * (ho - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (wo - 1) + 1, sw),
            slice(None))


def im2col(x: Any, kernel: tuple[int, int], out_hw: tuple[int, int], stride: tuple[int, int],
           dilation: tuple[int, int]) -> Any:
    """Gather the windows of padded ``(N, Hp, Wp, C)`` array ``x`` into ``(N*Ho*Wo, kh*kw*C)``.

    Column order is ``(kh, kw, C)``; row order is ``(N, Ho, Wo)``.
    """
    (kh, kw), (ho, wo) = kernel, out_hw
    n, _, _, c = x.shape
    view = _strided_windows(x, kernel, out_hw, stride, dilation)
    if view is not None:
        return view.reshape(n * ho * wo, kh * kw * c)
    xp = namespace_of(x)
    parts = [x[window_index(i, j, out_hw, stride, dilation)] for i in range(kh) for j in range(kw)]
    return xp.reshape(xp.stack(parts, axis=3), (n * ho * wo, kh * kw * c))


def im2col_transposed(x: Any, kernel: tuple[int, int], out_hw: tuple[int, int], stride: tuple[int, int],
                     dilation: tuple[int, int]) -> Any:
    """The transpose of :func:`im2col`, built directly: ``(kh*kw*C, N*Ho*Wo)``, same orders.

    For single-channel input the copy then runs along whole output rows (Wo values) instead of
    kw-value snippets; callers use its transposed view as the ``(N*Ho*Wo, K)`` matrix, which BLAS
    reads without a copy.
    """
    (kh, kw), (ho, wo) = kernel, out_hw
    n, _, _, c = x.shape
    view = _strided_windows(x, kernel, out_hw, stride, dilation)
    if view is not None:
        xp = namespace_of(x)
        return xp.reshape(xp.permute_dims(view, (3, 4, 5, 0, 1, 2)), (kh * kw * c, n * ho * wo))
    xp = namespace_of(x)
    parts = [x[window_index(i, j, out_hw, stride, dilation)] for i in range(kh) for j in range(kw)]
    stacked = xp.permute_dims(xp.stack(parts, axis=0), (0, 4, 1, 2, 3))  # (kh*kw, C, N, Ho, Wo)
    return xp.reshape(stacked, (kh * kw * c, n * ho * wo))


def col2im(blocks: Any, padded_shape: tuple[int, int, int, int], kernel: tuple[int, int],
           out_hw: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
           out: Any = None, first: int = 0) -> Any:
    """Adjoint of :func:`im2col`, from offset-major blocks: ``(kh*kw, n*Ho*Wo, C)`` -> ``(n, Hp, Wp, C)``.

    Block ``i*kw + j`` holds what kernel offset ``(i, j)`` contributes; each is contiguous, so every
    addition runs over whole ``Wo*C`` rows. With ``out`` (an ``(N, Hp, Wp, C)`` array), add into images
    ``first:first+n`` of it instead of a fresh array, and return it (chunks then need no concatenation).
    """
    xp = namespace_of(blocks)
    (kh, kw), (ho, wo) = kernel, out_hw
    n, _, _, c = padded_shape
    blocks = xp.reshape(blocks, (kh * kw, n, ho, wo, c))
    if out is None:
        out = xp.zeros(padded_shape, dtype=blocks.dtype, device=array_api_compat.device(blocks))
    images = slice(first, first + n)
    for i in range(kh):
        for j in range(kw):
            index = (images,) + window_index(i, j, out_hw, stride, dilation)[1:]
            out = add_at(out, index, blocks[i * kw + j, ...])
    return out


def col2im_matmul(g: Any, w_matrix: Any, padded_shape: tuple[int, int, int, int], kernel: tuple[int, int],
                  out_hw: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
                  out: Any = None, first: int = 0) -> Any:
    """``col2im(g @ w_matrix.T)``: the input gradient of an im2col GEMM ``patches @ w_matrix``.

    g: ``(n*Ho*Wo, O)``; w_matrix: ``(kh*kw*C, O)`` with rows ordered (offset, channel);
    padded_shape: ``(n, Hp, Wp, C)``; ``out``/``first`` as in :func:`col2im`. NumPy with numba
    makes one GEMM and adds its rows in one compiled pass; elsewhere ``kh*kw`` GEMMs give
    offset-major blocks for :func:`col2im`'s whole-row additions.
    """
    xp = namespace_of(g, w_matrix)
    (kh, kw), (ho, wo) = kernel, out_hw
    n, _, _, c = padded_shape
    o = w_matrix.shape[1]
    if out is None:
        out = xp.zeros(padded_shape, dtype=g.dtype, device=array_api_compat.device(g))
    if (array_api_compat.is_numpy_array(out) and out.flags.c_contiguous and out.dtype == g.dtype
            and compiled.available()):
        patches = xp.reshape(g @ xp.permute_dims(w_matrix, (1, 0)), (n, ho, wo, kh * kw, c))
        return compiled.col2im_into(patches, out, first, kernel, stride, dilation)
    w_offsets = xp.permute_dims(xp.reshape(w_matrix, (kh * kw, c, o)), (0, 2, 1))  # (kk, O, C)
    blocks = xp.matmul(g[None, ...], w_offsets)  # (kk, m, C)
    return col2im(blocks, padded_shape, kernel, out_hw, stride, dilation, out=out, first=first)


def _strided_windows(x: Any, kernel: tuple[int, int], out_hw: tuple[int, int], stride: tuple[int, int],
                     dilation: tuple[int, int]) -> Any | None:
    """A zero-copy ``(N, Ho, Wo, kh, kw, C)`` view of ``x``'s windows, or None if the backend has no strided views."""
    (kh, kw), (ho, wo), (sh, sw), (dh, dw) = kernel, out_hw, stride, dilation
    shape = (x.shape[0], ho, wo, kh, kw, x.shape[3])
    if array_api_compat.is_numpy_array(x) or array_api_compat.is_cupy_array(x):
        if array_api_compat.is_numpy_array(x):
            from numpy.lib.stride_tricks import as_strided
        else:
            from cupy.lib.stride_tricks import as_strided
        s0, s1, s2, s3 = x.strides
        return as_strided(x, shape, (s0, s1 * sh, s2 * sw, s1 * dh, s2 * dw, s3))
    if array_api_compat.is_torch_array(x):
        s0, s1, s2, s3 = x.stride()
        return x.as_strided(shape, (s0, s1 * sh, s2 * sw, s1 * dh, s2 * dw, s3), x.storage_offset())
    return None


def window_max(x: Any, windows: list[tuple]) -> Any:
    """Element-wise maximum of ``x[index]`` over the window slices (each ``(slice(None), rows, cols,
    slice(None))`` of an ``(N, H, W, C)`` array): max-pooling's forward. NumPy splits the batch axis
    over the worker threads and keeps one output buffer; other backends chain ``maximum``."""
    xp = namespace_of(x)
    if not array_api_compat.is_numpy_array(x) or len(windows) < 2:
        y = x[windows[0]]
        for index in windows[1:]:
            y = xp.maximum(y, x[index])
        return y
    import numpy
    out = numpy.empty(x[windows[0]].shape, dtype=x.dtype)

    def part(a: int, b: int) -> None:
        rows = x[a:b]
        numpy.maximum(rows[windows[0]], rows[windows[1]], out=out[a:b])
        for index in windows[2:]:
            numpy.maximum(out[a:b], rows[index], out=out[a:b])
    split_batch(part, x.shape[0], x)
    return out


def window_mean(x: Any, windows: list[tuple], kernel: tuple[int, int], tiles: bool) -> Any:
    """Element-wise mean of ``x[index]`` over the window slices of ``(N, Hp, Wp, C)`` array ``x``:
    average pooling's forward, ``(N, Ho, Wo, C)``. Where the windows tile ``x`` exactly (``tiles``),
    NumPy with numba makes one compiled pass split over the worker threads."""
    if tiles and _compiled_numpy(x):
        import numpy
        n, hp, wp, c = x.shape
        out = numpy.empty((n, hp // kernel[0], wp // kernel[1], c), dtype=x.dtype)
        split_batch(lambda a, b: pooling.mean_pool_tiled(x[a:b], kernel, out[a:b]), n, x)
        return out
    y = x[windows[0]]
    for index in windows[1:]:
        y = y + x[index]
    return y / float(len(windows))


def tanh_window_mean(x: Any, windows: list[tuple], kernel: tuple[int, int], tiles: bool) -> tuple[Any, Any]:
    """``y = tanh(x)`` ``(N, Hp, Wp, C)`` and :func:`window_mean` of ``y``, ``(N, Ho, Wo, C)``. Where
    :func:`window_mean` makes a compiled pass, each worker thread pools its share of ``y`` right after
    computing it, while it is still in cache. (Pooling every few images' share right away measured
    7-9% slower in lenet5's training at batch 128 than a thread's whole share at once.)"""
    if tiles and _compiled_numpy(x):
        import numpy
        n, hp, wp, c = x.shape
        y = numpy.empty_like(x)
        out = numpy.empty((n, hp // kernel[0], wp // kernel[1], c), dtype=x.dtype)

        def part(a: int, b: int) -> None:
            numpy.tanh(x[a:b], out=y[a:b])
            pooling.mean_pool_tiled(y[a:b], kernel, out[a:b])
        split_batch(part, n, x)
        return y, out
    y = namespace_of(x).tanh(x)
    return y, window_mean(y, windows, kernel, tiles)


def spread_mean_grad(g: Any, padded_shape: tuple[int, int, int, int], kernel: tuple[int, int],
                     windows: list[tuple], tiles: bool, tanh_y: Any = None) -> Any:
    """Gradient of :func:`window_mean`: each ``(N, Ho, Wo, C)`` output gradient divided by the window
    size and added over its window; ``(N, Hp, Wp, C)``. Given ``tanh_y`` (``y`` of
    :func:`tanh_window_mean`), the gradient with respect to that function's ``x``: times ``1 - y*y``."""
    if tiles and _compiled_numpy(g) and (tanh_y is None or _compiled_numpy(tanh_y)):
        import numpy
        out = numpy.empty(padded_shape, dtype=g.dtype)
        if tanh_y is None:
            split_batch(lambda a, b: pooling.mean_pool_tiled_grad(g[a:b], kernel, out[a:b]), g.shape[0], g)
        else:
            split_batch(lambda a, b: pooling.mean_pool_tiled_tanh_grad(g[a:b], tanh_y[a:b], kernel, out[a:b]),
                        g.shape[0], g)
        return out
    dx = _spread(g, padded_shape, kernel, windows, tiles)
    return dx if tanh_y is None else tanh_grad(dx, tanh_y)


def _spread(g: Any, padded_shape: tuple[int, int, int, int], kernel: tuple[int, int], windows: list[tuple],
            tiles: bool) -> Any:
    xp = namespace_of(g)
    g = g / float(kernel[0] * kernel[1])
    n, hp, wp, c = padded_shape
    if tiles:  # each input value in exactly one window: one broadcast copy
        (kh, kw), ho, wo = kernel, hp // kernel[0], wp // kernel[1]
        spread = xp.broadcast_to(xp.reshape(g, (n, ho, 1, wo, 1, c)), (n, ho, kh, wo, kw, c))
        return xp.reshape(spread, padded_shape)
    dx = xp.zeros(padded_shape, dtype=g.dtype, device=array_api_compat.device(g))
    for index in windows:
        dx = add_at(dx, index, g)
    return dx


def _compiled_numpy(x: Any) -> bool:
    return array_api_compat.is_numpy_array(x) and x.flags.c_contiguous and compiled.available()


def first_max_grad(x: Any, y: Any, g: Any, kernel: tuple[int, int], out_hw: tuple[int, int]) -> Any:
    """Max-pool gradient for windows that tile ``(N, Hp, Wp, C)`` array ``x`` exactly (stride = kernel):
    each window's first maximum in row-major order takes its output's gradient (as PyTorch), given the
    output ``y`` and gradient ``g`` ``(N, Ho, Wo, C)``. Returns ``(N, Hp, Wp, C)``. It writes into a fresh
    array, so it needs a backend with mutable arrays (not JAX; callers use the general path there).

    Per kernel offset, one strided slice is compared with the output and a "not yet routed" mask
    over the outputs tracks ties, so no step works on more than an output-sized array; NumPy with
    numba does it all in one compiled pass.
    """
    xp = namespace_of(g, x)
    if _compiled_numpy(x) and _compiled_numpy(y):
        import numpy
        out = numpy.empty(x.shape, dtype=g.dtype)
        split_batch(lambda a, b: compiled.max_pool_tiled_grad(x[a:b], y[a:b], g[a:b], kernel, out[a:b]),
                    x.shape[0], x)
        return out
    n, hp, wp, c = x.shape
    (kh, kw), (ho, wo) = kernel, out_hw
    windows = xp.reshape(x, (n, ho, kh, wo, kw, c))
    dx = xp.empty(windows.shape, dtype=g.dtype, device=array_api_compat.device(g))
    unrouted = None
    offsets = [(i, j) for i in range(kh) for j in range(kw)]
    for k, (i, j) in enumerate(offsets):
        if k == len(offsets) - 1 and unrouted is not None:
            takes = unrouted  # the window's maximum is here if no earlier offset had it
        else:
            takes = windows[:, :, i, :, j, :] == y
            if unrouted is None:
                unrouted = xp.logical_not(takes)
            else:
                takes = xp.logical_and(takes, unrouted)
                unrouted = xp.logical_and(unrouted, xp.logical_not(takes))
        dx[:, :, i, :, j, :] = g * xp.astype(takes, g.dtype)
    return xp.reshape(dx, (n, hp, wp, c))
