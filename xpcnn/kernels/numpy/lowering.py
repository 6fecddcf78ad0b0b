"""How a convolution becomes one matrix product: three lowerings, and the choice between them.

All turn padded channel-last input ``(N, Hp, Wp, C)`` into a "patch" matrix whose rows are
gathered windows, and the weight into a matrix, so that ``patches @ weight_matrix`` is the
output ``(N, Ho, Wo, O)`` in channel-last order.

- **columns** (im2col): a row per output pixel, ``kh*kw*C`` values; weight ``(kh*kw*C, O)``.
  Minimal arithmetic, but the patches are ``kh*kw`` times the input, and a GEMM with a
  handful of output channels runs far below the machine's peak.
- **rows** (banded weights): a row per output *row*: the ``kh`` input rows it reads, each
  ``Wp*C`` values, which lie next to each other in memory; the weight becomes a banded
  ``(kh*Wp*C, Wo*O)`` matrix (a block Toeplitz matrix that places each kernel column at
  every output column). It spends ``Wp/kw`` times the arithmetic, but copies only ``kh``
  times the input and gives a wide GEMM, which wins when there are few output channels.
- **tiles**: the rows lowering cut into tiles of ``t`` output columns: a row per tile reads
  the ``kh`` stretches of input it covers, and the band is only ``(kh*b*C, t*O)`` for a
  stretch of ``b`` input columns. The wasted arithmetic falls from ``Wp/kw`` to about
  ``(t + kw - 1)/kw``, at the price of a narrower GEMM.

Rows and tiles view the input as ``(N, Hp, Wq, P*C)``: blocks of ``P`` whole columns, whose
windows (``kh`` rows by ``kb`` blocks, stride one block) are what a tile reads. The rows
lowering is the one block ``P = Wp``; tiles use ``P = t*sw`` (the input step between tiles).
Both are then the columns lowering of that view, so all three share the im2col/col2im helpers.

A fourth choice, **direct**, is no matrix product at all: compiled loops that accumulate each
output pixel block in registers (:mod:`xpcnn.kernels.numpy.direct`; numba, few channels, stride
one). :func:`xpcnn.kernels.numpy.conv.conv2d_forward` takes it before any plan is made.

The code is written against the Array API, but the rule that chooses was measured on NumPy, so only
the NumPy kernels use it; the reference op (:mod:`xpcnn.ops.conv`) is the columns lowering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from xpcnn import backend as B
from xpcnn.ops.conv import check_lowering
from xpcnn.ops.shapes import Pair

#: Use the rows lowering when ``O * Wp / kw`` (output channels times the arithmetic it wastes)
#: is at most this. Measured over C in 1..32, O in 8..64, k in 3, 5, W in 14, 28 on NumPy:
#: below it the rows lowering was 0.4x-1.0x the time of im2col, above it up to 3x.
ROWS_LOWERING_MAX_SCORE = 80.0
#: The same for one input channel: such a layer is usually first and computes no input gradient,
#: where the rows lowering gains least (0.79x the time of im2col at a score of 37, 1.06x at 75).
ROWS_LOWERING_MAX_SCORE_ONE_CHANNEL = 60.0
#: ... and only while the banded weight stays this small: above about 1 MiB (with the patch chunk
#: it no longer shares a core's 2 MiB L2) the rows lowering measured 1.3-2.4x slower than im2col.
ROWS_LOWERING_MAX_WEIGHT_BYTES = 2**20
#: Where the rows lowering pays, cut rows into tiles (see :func:`tile_width`) when that divides the
#: wasted arithmetic by at least this much and a tile's patch row stays long enough for a fast GEMM.
#: Measured on NumPy at batch 128: seed-deep's 8->8 5x5 conv on 24x24 (ratio 3.0, 320 values) took
#: 0.88x the time of rows; lenet5's 6->16 5x5 on 14x14 (ratio 1.75) 1.17x, and single-channel
#: first layers (40 values per tile row) 1.06-1.18x.
TILES_MIN_WASTE_RATIO = 2.5
TILES_MIN_ROW_VALUES = 128


@dataclass(frozen=True)
class Lowering:
    """Window geometry of the patch matrix, in terms of the input as :meth:`view` shapes it."""

    kind: str               # "columns", "rows" or "tiles"
    kernel: Pair            # windows of the view: (kh, kw) for columns, (kh, kb blocks) when banded
    stride: Pair
    dilation: Pair
    out_hw: Pair            # windows per image: (Ho, Wo), or (Ho, tiles per row) when banded
    image_hw: Pair          # the conv's own (Ho, Wo)
    padded_width: int       # Wp of the real input
    kernel_width: tuple[int, int, int]  # kw, stride w, dilation w of the real kernel
    tile: int = 1           # output columns per patch row (Wo for rows, t for tiles)
    block: int = 1          # input columns per block of the banded view (Wp for rows)

    @property
    def banded(self) -> bool:
        """Rows and tiles multiply a banded weight; columns (im2col) the plain one."""
        return self.kind != "columns"

    @property
    def rows_per_image(self) -> int:
        return self.out_hw[0] * self.out_hw[1]

    @property
    def view_width(self) -> int:
        """Input columns the banded view covers (>= the columns the tiles read)."""
        return (self.out_hw[1] - 1 + self.kernel[1]) * self.block

    def view(self, x_padded: Any) -> Any:
        """``(N, Hp, Wp, C)`` as the array the windows are taken from."""
        if not self.banded:
            return x_padded
        xp = B.namespace_of(x_padded)
        n, hp, wp, c = x_padded.shape
        width = self.view_width
        if width > wp:
            x_padded = B.pad_hw(x_padded, 0, 0, 0, width - wp)
        elif width < wp:  # a stride > 1 that never reaches the last columns
            x_padded = x_padded[:, :, :width, :]
        return xp.reshape(x_padded, (n, hp, width // self.block, self.block * c))

    def unview(self, source_grad: Any, padded_shape: tuple[int, int, int, int]) -> Any:
        """Inverse of :meth:`view` for the gradient of the viewed array."""
        if not self.banded:
            return source_grad
        xp = B.namespace_of(source_grad)
        n, hp, wp, c = padded_shape
        width = self.view_width
        grad = xp.reshape(source_grad, (n, hp, width, c))
        if width > wp:
            return grad[:, :, :wp, :]
        return B.pad_hw(grad, 0, 0, 0, wp - width)

    def output(self, product: Any, images: int) -> Any:
        """The GEMM's ``(images*rows, O')`` product as the ``(N, Ho, Wo, O)`` output."""
        xp = B.namespace_of(product)
        ho, wo = self.image_hw
        width = self.out_hw[1] * self.tile
        y = xp.reshape(product, (images, ho, width, product.shape[1] // self.tile))
        return y if width == wo else y[:, :, :wo, :]

    def output_grad(self, grad_y: Any) -> Any:
        """``(N, Ho, Wo, O)`` output gradient as the ``(N*rows, O')`` matrix matching :meth:`output`."""
        xp = B.namespace_of(grad_y)
        n, _, wo, o = grad_y.shape
        width = self.out_hw[1] * self.tile
        if width > wo:
            grad_y = B.pad_hw(grad_y, 0, 0, 0, width - wo)
        return xp.reshape(grad_y, (n * self.rows_per_image, self.tile * o))

    def weight_matrix(self, weight: Any) -> Any:
        """``(O, C, kh, kw)`` weight as the ``(K, O')`` matrix the patches multiply."""
        xp = B.namespace_of(weight)
        o, c, kh, kw = weight.shape
        if not self.banded:
            return xp.permute_dims(xp.reshape(xp.permute_dims(weight, (0, 2, 3, 1)), (o, kh * kw * c)), (1, 0))
        band = xp.tensordot(weight, self._shifts(weight), axes=([3], [0]))  # (O, C, kh, b, t)
        return xp.reshape(xp.permute_dims(band, (2, 3, 1, 4, 0)), (kh * self._band_width * c, self.tile * o))

    def weight_grad(self, grad_matrix_t: Any, weight_shape: tuple[int, int, int, int]) -> Any:
        """Gradient of the weight from that of the weight matrix, given transposed ``(O', K)``."""
        xp = B.namespace_of(grad_matrix_t)
        o, c, kh, kw = weight_shape
        if not self.banded:
            return xp.permute_dims(xp.reshape(grad_matrix_t, (o, kh, kw, c)), (0, 3, 1, 2))
        grad_band = xp.reshape(grad_matrix_t, (self.tile, o, kh, self._band_width, c))
        grad = xp.tensordot(grad_band, self._shifts(grad_matrix_t), axes=([0, 3], [2, 1]))  # (O, kh, C, kw)
        return xp.permute_dims(grad, (0, 2, 1, 3))

    @property
    def _band_width(self) -> int:
        """Input columns one patch row holds per kernel row."""
        return self.kernel[1] * self.block

    def _shifts(self, like: Any) -> Any:
        """``S[j, p, q] = 1`` where a tile's output column ``q`` reads its input column ``p`` at kernel column ``j``."""
        xp = B.namespace_of(like)
        kw, sw, dw = self.kernel_width
        device = B.device_of(like)
        j = xp.reshape(xp.arange(kw, device=device), (kw, 1, 1))
        p = xp.reshape(xp.arange(self._band_width, device=device), (1, self._band_width, 1))
        q = xp.reshape(xp.arange(self.tile, device=device), (1, 1, self.tile))
        return xp.astype(p == q * sw + j * dw, like.dtype)


def choose_lowering(padded_shape: tuple[int, int, int, int], weight_shape: tuple[int, int, int, int],
                    stride: Pair, dilation: Pair, out_hw: Pair, kind: str = "auto", tile: int | None = None
                    ) -> Lowering:
    """The lowering named by ``kind``; for ``"auto"`` the one measured cheaper for these shapes
    (see :data:`ROWS_LOWERING_MAX_SCORE` and the constants after it). ``tile`` sets the tiles
    lowering's output columns per tile (default: :func:`tile_width`)."""
    check_lowering(kind)
    if kind == "direct":
        raise ValueError("choose_lowering: the 'direct' lowering is no matrix product and has no plan; "
                         "conv2d_forward runs it without one")
    if tile is not None and (not isinstance(tile, int) or tile < 1):
        raise ValueError(f"choose_lowering: tile must be a positive int (output columns per tile), got {tile!r}; "
                         "leave it None for the default width")
    wp = padded_shape[2]
    o, c, kh, kw = weight_shape
    if kind == "auto" and _rows_pay(c, o, kh, kw, wp, out_hw[1]):
        tiles = _tiles(kh, kw, stride, dilation, out_hw, wp, tile)
        return tiles if _tiles_pay(tiles, c) else _rows(kh, kw, stride, dilation, out_hw, wp)
    if kind == "tiles":
        return _tiles(kh, kw, stride, dilation, out_hw, wp, tile)
    if kind == "rows":
        return _rows(kh, kw, stride, dilation, out_hw, wp)
    return Lowering("columns", (kh, kw), stride, dilation, out_hw, out_hw, wp, (kw, stride[1], dilation[1]))


def tile_width(kw: int, sw: int, dw: int, wo: int) -> int:
    """Output columns per tile: ``(kw-1)*dw`` when the stride is one, so a tile's input is exactly two blocks."""
    return max(1, min(wo, math.ceil((kw - 1) * dw / sw)))


def _rows(kh: int, kw: int, stride: Pair, dilation: Pair, out_hw: Pair, wp: int) -> Lowering:
    """The rows lowering: one block of all ``Wp`` columns, one patch row per output row."""
    return Lowering("rows", (kh, 1), (stride[0], 1), (dilation[0], 1), (out_hw[0], 1), out_hw, wp,
                    (kw, stride[1], dilation[1]), out_hw[1], wp)


def _tiles(kh: int, kw: int, stride: Pair, dilation: Pair, out_hw: Pair, wp: int, tile: int | None) -> Lowering:
    """The tiles lowering with ``tile`` (default :func:`tile_width`) output columns per patch row."""
    t = tile or tile_width(kw, stride[1], dilation[1], out_hw[1])
    span = (t - 1) * stride[1] + (kw - 1) * dilation[1] + 1  # input columns one tile reads
    block = t * stride[1]
    return Lowering("tiles", (kh, math.ceil(span / block)), (stride[0], 1), (dilation[0], 1),
                    (out_hw[0], math.ceil(out_hw[1] / t)), out_hw, wp, (kw, stride[1], dilation[1]), t, block)


def _tiles_pay(tiles: Lowering, c: int) -> bool:
    """Whether ``tiles`` should beat the rows lowering (the measured rule of :data:`TILES_MIN_WASTE_RATIO`)."""
    band = tiles._band_width  # input columns per tile row and kernel row
    return tiles.padded_width / band >= TILES_MIN_WASTE_RATIO and tiles.kernel[0] * band * c >= TILES_MIN_ROW_VALUES


def _rows_pay(c: int, o: int, kh: int, kw: int, wp: int, wo: int) -> bool:
    """Whether the rows lowering should beat im2col (the measured rule of the constants above)."""
    limit = ROWS_LOWERING_MAX_SCORE_ONE_CHANNEL if c == 1 else ROWS_LOWERING_MAX_SCORE
    band_bytes = 4 * (kh * wp * c) * (wo * o)
    return o * wp / kw <= limit and band_bytes <= ROWS_LOWERING_MAX_WEIGHT_BYTES
