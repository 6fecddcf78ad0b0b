"""2-D convolution (cross-correlation, as in PyTorch) by im2col + one GEMM per batch chunk.

Inputs are logical ``(N, C, H, W)``; internally the data is channel-last, and the output
is a channel-first *view* of a channel-last buffer, so a following conv or pool reads it
without a layout copy. The column buffer is built per chunk of images (bounded memory and
cache-resident) and rebuilt in the backward pass rather than kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xpcnn import backend as B
from xpcnn.ops.shapes import Pair, output_hw

#: Upper bound on one chunk's column buffer, in bytes. Small enough to stay in cache.
COLUMN_BUFFER_BYTES = 4 * 2**20
#: Column buffers of a whole batch up to this size are kept for the backward pass instead of rebuilt.
KEEP_COLUMNS_BYTES = 16 * 2**20


@dataclass
class ConvContext:
    """What the backward pass needs: the padded channel-last input and the geometry."""

    x_padded: Any          # (N, Hp, Wp, C)
    w_matrix: Any          # (O, kh*kw*C)
    kernel: Pair
    stride: Pair
    padding: tuple[int, int, int, int]
    dilation: Pair
    out_hw: Pair
    has_bias: bool
    columns: list | None = None  # the forward pass's column chunks, when small enough to keep


def _chunk_size(images: int, rows_per_image: int, cols: int, itemsize: int) -> int:
    per_image = max(1, rows_per_image * cols * itemsize)
    return max(1, min(images, COLUMN_BUFFER_BYTES // per_image))


def conv2d_forward(x: Any, weight: Any, bias: Any | None, stride: Pair, padding: tuple[int, int, int, int],
                   dilation: Pair) -> tuple[Any, ConvContext]:
    """``y[n, o] = sum_c x[n, c] * weight[o, c] + bias[o]``.

    x: ``(N, C, H, W)``; weight: ``(O, C, kh, kw)``; bias: ``(O,)`` or None;
    padding: ``(top, bottom, left, right)``. Returns y ``(N, O, Ho, Wo)`` and the context.
    """
    xp = B.namespace_of(x, weight)
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    kernel = (kh, kw)
    out_hw = output_hw((h, w), kernel, stride, padding, dilation)
    x_padded = B.pad_hw(B.channels_last(x), *padding)
    w_matrix = xp.reshape(xp.permute_dims(weight, (0, 2, 3, 1)), (o, kh * kw * c))
    w_t = xp.permute_dims(w_matrix, (1, 0))
    rows = out_hw[0] * out_hw[1]
    step = _chunk_size(n, rows, kh * kw * c, _itemsize(x))
    chunks = (_columns(x_padded[a:min(a + step, n), ...], kernel, out_hw, stride, dilation)
              for a in range(0, n, step))
    columns = list(chunks) if n * rows * kh * kw * c * _itemsize(x) <= KEEP_COLUMNS_BYTES else None
    parts = [cols @ w_t for cols in (columns if columns is not None else chunks)]
    y = parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
    if bias is not None:
        y += bias
    y = B.channels_first(xp.reshape(y, (n, out_hw[0], out_hw[1], o)))
    ctx = ConvContext(x_padded, w_matrix, kernel, stride, padding, dilation, out_hw, bias is not None, columns)
    return y, ctx


def conv2d_backward(grad_y: Any, ctx: ConvContext, need_input_grad: bool = True
                    ) -> tuple[Any | None, Any, Any | None]:
    """Gradients of :func:`conv2d_forward` for ``grad_y`` ``(N, O, Ho, Wo)``.

    Returns ``(grad_x (N, C, H, W) or None, grad_weight (O, C, kh, kw), grad_bias (O,) or None)``.
    """
    xp = B.namespace_of(grad_y, ctx.x_padded)
    n, _, _, c = ctx.x_padded.shape
    o = ctx.w_matrix.shape[0]
    kh, kw = ctx.kernel
    rows = ctx.out_hw[0] * ctx.out_hw[1]
    g = xp.reshape(B.channels_last(grad_y), (n * rows, o))
    grad_b = xp.sum(g, axis=0) if ctx.has_bias else None
    step = _chunk_size(n, rows, kh * kw * c, _itemsize(g))
    grad_w = None
    # (kh*kw, O, C): one small weight matrix per kernel offset, so the column gradient comes out
    # offset-major and col2im adds whole contiguous rows (1.5x faster than slicing (m, K) columns).
    w_offsets = xp.reshape(xp.permute_dims(xp.reshape(ctx.w_matrix, (o, kh, kw, c)), (1, 2, 0, 3)), (kh * kw, o, c))
    dx = xp.zeros(ctx.x_padded.shape, dtype=g.dtype, device=B.device_of(g)) if need_input_grad else None
    for k, a in enumerate(range(0, n, step)):
        end = min(a + step, n)
        g_chunk = g[a * rows:end * rows, :]
        x_chunk = ctx.x_padded[a:end, ...]
        cols = (ctx.columns[k] if ctx.columns is not None
                else _columns(x_chunk, ctx.kernel, ctx.out_hw, ctx.stride, ctx.dilation))
        part = xp.permute_dims(g_chunk, (1, 0)) @ cols
        grad_w = part if grad_w is None else grad_w + part
        if need_input_grad:
            dcols = xp.matmul(g_chunk[None, ...], w_offsets)  # (kh*kw, m, C)
            dx = B.col2im(dcols, x_chunk.shape, ctx.kernel, ctx.out_hw, ctx.stride, ctx.dilation, out=dx, first=a)
    grad_w = xp.permute_dims(xp.reshape(grad_w, (o, kh, kw, c)), (0, 3, 1, 2))
    grad_x = None
    if need_input_grad:
        grad_x = B.channels_first(B.crop_hw(dx, *ctx.padding))
    return grad_x, grad_w, grad_b


def _columns(x: Any, kernel: Pair, out_hw: Pair, stride: Pair, dilation: Pair) -> Any:
    """The ``(n*Ho*Wo, kh*kw*C)`` column matrix of channel-last ``x``; for one channel, the transposed
    view of a ``(K, M)`` buffer, whose gather copies whole rows instead of kw-value snippets."""
    if x.shape[3] == 1:
        xp = B.namespace_of(x)
        return xp.permute_dims(B.im2col_transposed(x, kernel, out_hw, stride, dilation), (1, 0))
    return B.im2col(x, kernel, out_hw, stride, dilation)


def _itemsize(x: Any) -> int:
    return 8 if "64" in str(x.dtype) else 4
