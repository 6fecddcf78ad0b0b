"""2-D convolution (cross-correlation, as in PyTorch) as one GEMM per batch chunk.

Inputs are logical ``(N, C, H, W)``; internally the data is channel-last, and the output
is a channel-first *view* of a channel-last buffer, so a following conv or pool reads it
without a layout copy. :mod:`xpcnn.ops.lowering` picks how windows become matrix rows
(im2col columns, or whole input rows against a banded weight). The patch matrix is built
per chunk of images (bounded memory and cache-resident) and rebuilt in the backward pass
unless the whole batch's is small enough to keep.

Where the backend has them (NumPy with numba) and the channels are few, the ``"direct"``
kernels of :mod:`xpcnn.backend.direct` replace the matrix product altogether.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xpcnn import backend as B
from xpcnn.ops.lowering import DIRECT, Lowering, choose_lowering
from xpcnn.ops.shapes import Pair, output_hw

#: Upper bound on one chunk's patch matrix, in bytes. Small enough to stay in cache.
COLUMN_BUFFER_BYTES = 4 * 2**20
#: Patch matrices of a whole batch up to this size are kept for the backward pass instead of rebuilt.
KEEP_COLUMNS_BYTES = 16 * 2**20
#: im2col patch matrices of a whole batch from this size on are built and multiplied on the worker
#: threads (xpcnn/backend/threads.py); smaller ones, and the banded lowering's few wide GEMMs, measured
#: faster in one thread with a 2-thread OpenBLAS (bench/results/optimization-log.md).
THREADED_COLUMNS_BYTES = 64 * 2**20


@dataclass
class ConvContext:
    """What the backward pass needs: the padded channel-last input, the lowering and the weight matrix."""

    x_padded: Any          # (N, Hp, Wp, C)
    weight_shape: tuple[int, int, int, int]
    w_matrix: Any          # (K, O'): see Lowering.weight_matrix
    lowering: Lowering
    padding: tuple[int, int, int, int]
    has_bias: bool
    chunks: list[tuple[int, int]]  # image ranges, one patch matrix each
    columns: list | None = None  # the forward pass's patch chunks, when small enough to keep


@dataclass
class DirectConvContext:
    """What the backward pass of the direct kernels needs."""

    x_padded: Any          # (N, Hp, Wp, C)
    weight: Any            # (O, C, kh, kw)
    stride: Pair
    dilation: Pair
    padding: tuple[int, int, int, int]
    has_bias: bool


def _chunk_size(images: int, rows_per_image: int, cols: int, itemsize: int) -> int:
    per_image = max(1, rows_per_image * cols * itemsize)
    return max(1, min(images, COLUMN_BUFFER_BYTES // per_image))


def _threaded_like(x: Any, lowering: Lowering, cols: int) -> Any:
    """``x`` where the chunks should run on the worker threads, else None (one thread)."""
    total = x.shape[0] * lowering.rows_per_image * cols * _itemsize(x)
    return x if not lowering.banded and total >= THREADED_COLUMNS_BYTES else None


def conv2d_forward(x: Any, weight: Any, bias: Any | None, stride: Pair, padding: tuple[int, int, int, int],
                   dilation: Pair, lowering: str = "auto") -> tuple[Any, ConvContext]:
    """``y[n, o] = sum_c x[n, c] * weight[o, c] + bias[o]``.

    x: ``(N, C, H, W)``; weight: ``(O, C, kh, kw)``; bias: ``(O,)`` or None;
    padding: ``(top, bottom, left, right)``; lowering: ``"auto"``, ``"columns"``, ``"rows"`` or
    ``"tiles"`` or ``"direct"`` (see :mod:`xpcnn.ops.lowering`). Returns y ``(N, O, Ho, Wo)`` and the context.
    """
    xp = B.namespace_of(x, weight)
    n, _, h, w = x.shape
    kh, kw = weight.shape[2:]
    out_hw = output_hw((h, w), (kh, kw), stride, padding, dilation)
    x_padded = B.pad_hw(B.channels_last(x), *padding)
    if _use_direct(x, tuple(weight.shape), stride, lowering):
        y = B.direct.conv_forward(x_padded, weight, bias, out_hw, stride, dilation, zero_rows=padding[:2])
        ctx = DirectConvContext(x_padded, weight, stride, dilation, padding, bias is not None)
        return B.channels_first(y), ctx
    plan = choose_lowering(tuple(x_padded.shape), tuple(weight.shape), stride, dilation, out_hw, lowering)
    source = plan.view(x_padded)
    w_matrix = plan.weight_matrix(weight)
    rows, k = plan.rows_per_image, w_matrix.shape[0]
    threaded = _threaded_like(x, plan, k)
    # Image ranges whose patch matrices stay under COLUMN_BUFFER_BYTES, as even as the worker threads need.
    chunks = B.threads.batch_ranges(n, _chunk_size(n, rows, k, _itemsize(x)), like=threaded)
    keep = n * rows * k * _itemsize(x) <= KEEP_COLUMNS_BYTES

    def chunk(images: tuple[int, int]) -> tuple[Any, Any]:
        cols = _patches(source[images[0]:images[1], ...], plan)
        return (cols if keep else None), cols @ w_matrix

    done = B.parallel_map(chunk, chunks, like=threaded)
    columns = [cols for cols, _ in done] if keep else None
    parts = [part for _, part in done]
    y = plan.output(parts[0] if len(parts) == 1 else xp.concat(parts, axis=0), n)
    if bias is not None:
        y += bias
    ctx = ConvContext(x_padded, tuple(weight.shape), w_matrix, plan, padding, bias is not None, chunks, columns)
    return B.channels_first(y), ctx


def conv2d_backward(grad_y: Any, ctx: ConvContext | DirectConvContext, need_input_grad: bool = True
                    ) -> tuple[Any | None, Any, Any | None]:
    """Gradients of :func:`conv2d_forward` for ``grad_y`` ``(N, O, Ho, Wo)``.

    Returns ``(grad_x (N, C, H, W) or None, grad_weight (O, C, kh, kw), grad_bias (O,) or None)``.
    """
    if isinstance(ctx, DirectConvContext):
        return _direct_backward(grad_y, ctx, need_input_grad)
    xp = B.namespace_of(grad_y, ctx.x_padded)
    lowering = ctx.lowering
    source = lowering.view(ctx.x_padded)
    k = ctx.w_matrix.shape[0]
    rows = lowering.rows_per_image
    g_nhwc = B.channels_last(grad_y)
    grad_b = _bias_grad(g_nhwc) if ctx.has_bias else None
    g = lowering.output_grad(g_nhwc)
    grad_wm = None
    dsource = xp.zeros(source.shape, dtype=g.dtype, device=B.device_of(g)) if need_input_grad else None

    def chunk(index_start: tuple[int, tuple[int, int]]) -> Any:
        nonlocal dsource
        index, (a, end) = index_start
        g_chunk = g[a * rows:end * rows, :]
        x_chunk = source[a:end, ...]
        cols = ctx.columns[index] if ctx.columns is not None else _patches(x_chunk, lowering)
        if need_input_grad:
            # Chunks write disjoint images of dsource; only immutable arrays (JAX, never threaded) rebind it.
            dsource = B.col2im_matmul(g_chunk, ctx.w_matrix, tuple(x_chunk.shape), lowering.kernel, lowering.out_hw,
                                      lowering.stride, lowering.dilation, out=dsource, first=a)
        # (K, O') for im2col columns: 1.1-1.7x faster in OpenBLAS than (O', K) when O' is a few dozen;
        # the banded lowering's wide O' runs as fast either way, and (O', K) measured slightly better.
        return (xp.permute_dims(g_chunk, (1, 0)) @ cols if lowering.banded
                else xp.permute_dims(cols, (1, 0)) @ g_chunk)

    for part in B.parallel_map(chunk, list(enumerate(ctx.chunks)), like=_threaded_like(ctx.x_padded, lowering, k)):
        grad_wm = part if grad_wm is None else grad_wm + part
    grad_w = lowering.weight_grad(grad_wm if lowering.banded else xp.permute_dims(grad_wm, (1, 0)), ctx.weight_shape)
    grad_x = None
    if need_input_grad:
        dx = lowering.unview(dsource, tuple(ctx.x_padded.shape))
        grad_x = B.channels_first(B.crop_hw(dx, *ctx.padding))
    return grad_x, grad_w, grad_b


def _use_direct(x: Any, weight_shape: tuple[int, int, int, int], stride: Pair, lowering: str) -> bool:
    """Whether the direct kernels run: always for ``"direct"`` (or a clear error where they cannot),
    and for ``"auto"`` wherever they can (they measured 1.4-4x faster than every GEMM lowering with
    1-32 channels, and 1.5x with mnist-cnn's 32->64 on 512-bit vectors; see
    :func:`xpcnn.backend.direct.max_channels`)."""
    if lowering not in ("auto", DIRECT):
        return False
    why_not = B.direct.supports(x, weight_shape, stride)
    if why_not is not None and lowering == DIRECT:
        raise ValueError(f"conv2d: the 'direct' lowering cannot run this convolution: {why_not}; "
                         "use lowering='auto' to let xpcnn pick one that can")
    return why_not is None


def _direct_backward(grad_y: Any, ctx: DirectConvContext, need_input_grad: bool) -> tuple[Any | None, Any, Any | None]:
    g = B.channels_last(grad_y)
    grad_b = _bias_grad(g) if ctx.has_bias else None
    grad_w = B.direct.conv_weight_grad(ctx.x_padded, g, tuple(ctx.weight.shape[2:]), ctx.stride, ctx.dilation)
    grad_x = None
    if need_input_grad:
        dx = B.direct.conv_input_grad(g, ctx.weight, tuple(ctx.x_padded.shape[1:3]), ctx.dilation)
        grad_x = B.channels_first(B.crop_hw(dx, *ctx.padding))
    return grad_x, grad_w, grad_b


def _bias_grad(grad_nhwc: Any) -> Any:
    """Sum of ``(N, Ho, Wo, O)`` over all but the channel axis, as a matrix-vector product: NumPy's
    ``sum(axis=0)`` over an ``(N*Ho*Wo, O)`` matrix runs an O-long inner loop per row, 7x slower at O = 8."""
    xp = B.namespace_of(grad_nhwc)
    matrix = xp.reshape(grad_nhwc, (-1, grad_nhwc.shape[3]))
    ones = xp.ones((1, matrix.shape[0]), dtype=matrix.dtype, device=B.device_of(matrix))
    return xp.reshape(ones @ matrix, (-1,))


def _patches(x: Any, lowering: Lowering) -> Any:
    """The ``(n*rows, K)`` patch matrix of (viewed) channel-last ``x``; for one channel, the transposed
    view of a ``(K, M)`` buffer, whose gather copies whole rows instead of kw-value snippets."""
    geometry = (lowering.kernel, lowering.out_hw, lowering.stride, lowering.dilation)
    if x.shape[3] == 1:
        xp = B.namespace_of(x)
        return xp.permute_dims(B.im2col_transposed(x, *geometry), (1, 0))
    return B.im2col(x, *geometry)


def _itemsize(x: Any) -> int:
    return 8 if "64" in str(x.dtype) else 4
