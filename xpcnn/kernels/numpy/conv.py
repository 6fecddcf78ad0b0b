"""The convolution on NumPy: the lowering measured fastest for the shapes, on the worker threads.

Replaces :func:`xpcnn.ops.conv.conv2d_forward` for float NumPy arrays. With numba and few channels
at stride one, the compiled direct loops of :mod:`xpcnn.kernels.numpy.direct` run (no matrix
product); otherwise a lowering of :mod:`xpcnn.kernels.numpy.lowering` (im2col columns, or rows/tiles
against a banded weight) builds the patch matrix per chunk of images (bounded memory, cache-resident),
the chunks run on the worker threads when the whole batch's patches are large, and the backward pass
adds the input gradient with numba's one-pass col2im. The rules were measured on NumPy
(bench/results/optimization-log.md) and decide for NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy

from xpcnn import backend as B
from xpcnn.kernels.numpy import compiled, direct
from xpcnn.kernels.numpy.lowering import Lowering, choose_lowering
from xpcnn.kernels.numpy.threads import batch_ranges, parallel_map, split_batch
from xpcnn.kernels.registry import register
from xpcnn.ops.arithmetic import accumulate
from xpcnn.ops.shapes import Pair, Padding, output_hw, unpadded_shape
from xpcnn.settings import current


def _float_numpy(x: Any, weight: Any, *_: Any, **__: Any) -> bool:
    return type(x) is numpy.ndarray and type(weight) is numpy.ndarray and x.dtype.kind == "f"


@register("conv2d_forward", "numpy", when=_float_numpy)
def conv2d_forward(x: Any, weight: Any, bias: Any | None, stride: Pair, padding: Padding, dilation: Pair,
                   lowering: str = "auto") -> tuple[Any, Any]:
    n, _, h, w = x.shape
    kh, kw = weight.shape[2:]
    out_hw = output_hw((h, w), (kh, kw), stride, padding, dilation)
    if _use_direct(x, tuple(weight.shape), stride, lowering):
        x_last = B.channels_last(x)
        y = direct.conv_forward(x_last, weight, bias, padding, out_hw, stride, dilation)
        return B.channels_first(y), DirectContext(x_last, weight, stride, dilation, padding, bias is not None)
    x_padded = B.pad_hw(B.channels_last(x), *padding)
    plan = choose_lowering(tuple(x_padded.shape), tuple(weight.shape), stride, dilation, out_hw, lowering)
    source = plan.view(x_padded)
    w_matrix = plan.weight_matrix(weight)
    rows, k = plan.rows_per_image, w_matrix.shape[0]
    itemsize = x.dtype.itemsize
    threaded = _threaded(n * rows * k * w_matrix.shape[1])
    # Image ranges whose patch matrices stay under the column_buffer_bytes setting, as even as the threads need.
    chunks = batch_ranges(n, max(1, current().column_buffer_bytes // max(1, rows * k * itemsize)), threaded)
    keep = n * rows * k * itemsize <= current().keep_columns_bytes

    def chunk(images: tuple[int, int]) -> tuple[Any, Any]:
        cols = _patches(source[images[0]:images[1], ...], plan)
        return (cols if keep else None), cols @ w_matrix

    done = parallel_map(chunk, chunks, threaded)
    parts = [part for _, part in done]
    y = plan.output(parts[0] if len(parts) == 1 else numpy.concatenate(parts, axis=0), n)
    if bias is not None:
        y += bias
    columns = [cols for cols, _ in done] if keep else None
    return B.channels_first(y), LoweredContext(x_padded, tuple(weight.shape), w_matrix, plan, padding,
                                               bias is not None, chunks, columns)


@dataclass
class LoweredContext:
    """What the backward pass of a lowered (GEMM) convolution needs."""

    x_padded: Any          # (N, Hp, Wp, C)
    weight_shape: tuple[int, int, int, int]
    w_matrix: Any          # (K, O'): see Lowering.weight_matrix
    lowering: Lowering
    padding: Padding
    has_bias: bool
    chunks: list[tuple[int, int]]  # image ranges, one patch matrix each
    columns: list | None = None  # the forward pass's patch chunks, when small enough to keep

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """``(N, C, H, W)`` of the forward pass's input."""
        return unpadded_shape(tuple(self.x_padded.shape), self.padding)

    def backward(self, grad_y: Any, need_input_grad: bool, add_to: Any | None = None
                 ) -> tuple[Any | None, Any, Any | None]:
        plan = self.lowering
        source = plan.view(self.x_padded)
        rows, k = plan.rows_per_image, self.w_matrix.shape[0]
        g_nhwc = B.channels_last(grad_y)
        grad_b = bias_grad(g_nhwc) if self.has_bias else None
        g = plan.output_grad(g_nhwc)
        dsource = numpy.zeros(source.shape, dtype=g.dtype) if need_input_grad else None

        def chunk(index_start: tuple[int, tuple[int, int]]) -> Any:
            index, (a, end) = index_start
            g_chunk = g[a * rows:end * rows, :]
            x_chunk = source[a:end, ...]
            cols = self.columns[index] if self.columns is not None else _patches(x_chunk, plan)
            if need_input_grad:  # chunks write disjoint images of dsource
                _col2im_matmul(g_chunk, self.w_matrix, dsource, a, plan)
            # (K, O') for im2col columns: 1.1-1.7x faster in OpenBLAS than (O', K) when O' is a few dozen;
            # the banded lowering's wide O' runs as fast either way, and (O', K) measured slightly better.
            return g_chunk.T @ cols if plan.banded else cols.T @ g_chunk

        parts = parallel_map(chunk, list(enumerate(self.chunks)),
                             _threaded(self.x_padded.shape[0] * rows * k * self.w_matrix.shape[1]))
        grad_wm = parts[0] if len(parts) == 1 else sum(parts[1:], parts[0])
        grad_w = plan.weight_grad(grad_wm if plan.banded else grad_wm.T, self.weight_shape)
        grad_x = None
        if need_input_grad:
            dx = plan.unview(dsource, tuple(self.x_padded.shape))
            grad_x = B.channels_first(B.crop_hw(dx, *self.padding))
            if add_to is not None:
                grad_x = accumulate(grad_x, add_to, protected=grad_y)  # dsource is ours to write
        return grad_x, grad_w, grad_b


@dataclass
class DirectContext:
    """What the backward pass of the direct kernels needs."""

    x: Any                 # (N, H, W, C), unpadded: the kernels pad inside
    weight: Any            # (O, C, kh, kw)
    stride: Pair
    dilation: Pair
    padding: Padding
    has_bias: bool

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """``(N, C, H, W)`` of the forward pass's input."""
        n, h, w, c = self.x.shape
        return (n, c, h, w)

    def backward(self, grad_y: Any, need_input_grad: bool, add_to: Any | None = None
                 ) -> tuple[Any | None, Any, Any | None]:
        g = B.channels_last(grad_y)
        grad_b = bias_grad(g) if self.has_bias else None
        grad_w = direct.conv_weight_grad(self.x, g, tuple(self.weight.shape[2:]), self.padding, self.stride,
                                         self.dilation)
        grad_x = None
        if need_input_grad:
            addend = None if add_to is None else B.channels_last(add_to)
            grad_x = B.channels_first(direct.conv_input_grad(g, self.weight, self.padding,
                                                             tuple(self.x.shape[1:3]), self.dilation, addend))
        return grad_x, grad_w, grad_b


def _threaded(multiply_adds: int) -> bool:
    """Whether a convolution's chunks run on the worker threads: wherever the GEMMs hold the
    ``split_min_matmul_flops`` setting's work. Inside a step OpenBLAS runs one thread, so a chunk the
    workers do not take runs on one core."""
    return 2 * multiply_adds >= current().split_min_matmul_flops


def _use_direct(x: Any, weight_shape: tuple[int, int, int, int], stride: Pair, lowering: str) -> bool:
    """Whether the direct kernels run: always for ``"direct"`` (or a clear error where they cannot), and
    for ``"auto"`` wherever they can (faster than every GEMM lowering up to :func:`direct.max_channels`)."""
    if lowering not in ("auto", "direct"):
        return False
    why_not = direct.supports(x, weight_shape, stride)
    if why_not is not None and lowering == "direct":
        raise ValueError(f"conv2d: the 'direct' lowering cannot run this convolution: {why_not}; "
                         "use lowering='auto' to let xpcnn pick one that can")
    return why_not is None


def bias_grad(grad_nhwc: Any) -> Any:
    """Sum of ``(N, Ho, Wo, O)`` over all but the channel axis, as matrix-vector products over batch
    pieces on the worker threads: NumPy's ``sum(axis=0)`` over an ``(N*Ho*Wo, O)`` matrix runs an O-long
    inner loop per row, 7x slower at O = 8."""
    matrix = grad_nhwc.reshape(grad_nhwc.shape[0], -1, grad_nhwc.shape[3])
    partial: dict[int, Any] = {}

    def part(a: int, b: int) -> None:
        rows = matrix[a:b].reshape(-1, matrix.shape[2])
        partial[a] = numpy.ones(rows.shape[0], dtype=rows.dtype) @ rows
    split_batch(part, matrix.shape[0], grad_nhwc.nbytes >= current().split_min_bytes)
    return sum((partial[k] for k in sorted(partial)), numpy.zeros(matrix.shape[2], grad_nhwc.dtype))


def _col2im_matmul(g: Any, w_matrix: Any, out: Any, first: int, plan: Lowering) -> None:
    """Add the input gradient of one chunk's GEMM, ``col2im(g @ w_matrix.T)``, into images ``first:`` of
    ``out``: numba's one pass over the whole product where it can, else the portable offset-major path."""
    n = g.shape[0] // plan.rows_per_image
    shape = (n, *out.shape[1:])
    geometry = (plan.kernel, plan.out_hw, plan.stride, plan.dilation)
    if compiled.available() and out.flags.c_contiguous and out.dtype == g.dtype:
        kh, kw = plan.kernel
        patches = (g @ w_matrix.T).reshape(n, *plan.out_hw, kh * kw, out.shape[3])
        compiled.col2im_into(patches, out, first, plan.kernel, plan.stride, plan.dilation)
    else:
        B.col2im_matmul(g, w_matrix, shape, *geometry, out=out, first=first)


def _patches(x: Any, plan: Lowering) -> Any:
    """The ``(n*rows, K)`` patch matrix of (viewed) channel-last ``x``; for one channel, the transposed
    view of a ``(K, M)`` buffer, whose gather copies whole rows instead of kw-value snippets."""
    geometry = (plan.kernel, plan.out_hw, plan.stride, plan.dilation)
    if x.shape[3] == 1:
        return B.im2col_transposed(x, *geometry).T
    return B.im2col(x, *geometry)
