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

from xpcnn.backend.namespaces import is_jax, namespace_of


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
    if array_api_compat.is_numpy_array(x):  # fill only the border: one pass over memory instead of two
        return _pad_numpy(x, top, bottom, left, right, value)
    out = xp.full((n, h + top + bottom, w + left + right, c), value, dtype=x.dtype,
                  device=array_api_compat.device(x))
    index = (slice(None), slice(top, top + h), slice(left, left + w), slice(None))
    if is_jax(xp):
        return out.at[index].set(x)
    out[index] = x
    return out


def _pad_numpy(x: Any, top: int, bottom: int, left: int, right: int, value: float) -> Any:
    import numpy
    n, h, w, c = x.shape
    out = numpy.empty((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
    out[:, :top] = value
    out[:, top + h:] = value
    out[:, top:top + h, :left] = value
    out[:, top:top + h, left + w:] = value
    out[:, top:top + h, left:left + w] = x
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
    padded_shape: ``(n, Hp, Wp, C)``; ``out``/``first`` as in :func:`col2im`. ``kh*kw`` GEMMs give
    offset-major blocks for :func:`col2im`'s whole-row additions.
    """
    xp = namespace_of(g, w_matrix)
    kh, kw = kernel
    c, o = padded_shape[3], w_matrix.shape[1]
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
