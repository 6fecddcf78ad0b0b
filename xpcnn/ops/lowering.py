"""How a convolution becomes one matrix product: two lowerings, and the choice between them.

Both turn padded channel-last input ``(N, Hp, Wp, C)`` into a "patch" matrix whose rows are
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

The rows lowering is the columns lowering of the input viewed as ``(N, Hp, 1, Wp*C)`` with a
``(kh, 1)`` kernel, so both share the im2col/col2im helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xpcnn import backend as B
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


@dataclass(frozen=True)
class Lowering:
    """Window geometry of the patch matrix, in terms of the input as :meth:`view` shapes it."""

    banded: bool
    kernel: Pair
    stride: Pair
    dilation: Pair
    out_hw: Pair
    image_hw: Pair          # the conv's own (Ho, Wo)
    padded_width: int       # Wp of the real input
    kernel_width: tuple[int, int, int]  # kw, stride w, dilation w of the real kernel

    @property
    def rows_per_image(self) -> int:
        return self.out_hw[0] * self.out_hw[1]

    def view(self, x_padded: Any) -> Any:
        """``(N, Hp, Wp, C)`` as the array the windows are taken from."""
        if not self.banded:
            return x_padded
        n, hp, wp, c = x_padded.shape
        return B.namespace_of(x_padded).reshape(x_padded, (n, hp, 1, wp * c))

    def unview(self, source_grad: Any, padded_shape: tuple[int, int, int, int]) -> Any:
        """Inverse of :meth:`view` for the gradient of the viewed array."""
        if not self.banded:
            return source_grad
        return B.namespace_of(source_grad).reshape(source_grad, padded_shape)

    def weight_matrix(self, weight: Any) -> Any:
        """``(O, C, kh, kw)`` weight as the ``(K, O')`` matrix the patches multiply."""
        xp = B.namespace_of(weight)
        o, c, kh, kw = weight.shape
        if not self.banded:
            return xp.permute_dims(xp.reshape(xp.permute_dims(weight, (0, 2, 3, 1)), (o, kh * kw * c)), (1, 0))
        wp, wo = self.padded_width, self.image_hw[1]
        band = xp.tensordot(weight, self._shifts(weight), axes=([3], [0]))  # (O, C, kh, Wp, Wo)
        return xp.reshape(xp.permute_dims(band, (2, 3, 1, 4, 0)), (kh * wp * c, wo * o))

    def weight_grad(self, grad_matrix_t: Any, weight_shape: tuple[int, int, int, int]) -> Any:
        """Gradient of the weight from that of the weight matrix, given transposed ``(O', K)``."""
        xp = B.namespace_of(grad_matrix_t)
        o, c, kh, kw = weight_shape
        if not self.banded:
            return xp.permute_dims(xp.reshape(grad_matrix_t, (o, kh, kw, c)), (0, 3, 1, 2))
        wp, wo = self.padded_width, self.image_hw[1]
        grad_band = xp.reshape(grad_matrix_t, (wo, o, kh, wp, c))
        grad = xp.tensordot(grad_band, self._shifts(grad_matrix_t), axes=([0, 3], [2, 1]))  # (O, kh, C, kw)
        return xp.permute_dims(grad, (0, 2, 1, 3))

    def _shifts(self, like: Any) -> Any:
        """``S[j, p, q] = 1`` where output column ``q`` reads input column ``p`` at kernel column ``j``."""
        xp = B.namespace_of(like)
        kw, sw, dw = self.kernel_width
        device = B.device_of(like)
        j = xp.reshape(xp.arange(kw, device=device), (kw, 1, 1))
        p = xp.reshape(xp.arange(self.padded_width, device=device), (1, self.padded_width, 1))
        q = xp.reshape(xp.arange(self.image_hw[1], device=device), (1, 1, self.image_hw[1]))
        return xp.astype(p == q * sw + j * dw, like.dtype)


#: Accepted values of ``kind`` in :func:`choose_lowering` (and of ``Conv2D.lowering``).
LOWERINGS = ("auto", "columns", "rows")


def check_lowering(kind: str, where: str = "conv2d") -> str:
    """``kind`` if it is one of :data:`LOWERINGS`, else a ValueError naming ``where`` and the choices."""
    if kind not in LOWERINGS:
        raise ValueError(f"{where}: lowering must be one of {', '.join(map(repr, LOWERINGS))}, got {kind!r}")
    return kind


def choose_lowering(padded_shape: tuple[int, int, int, int], weight_shape: tuple[int, int, int, int],
                    stride: Pair, dilation: Pair, out_hw: Pair, kind: str = "auto") -> Lowering:
    """The lowering named by ``kind``; for ``"auto"`` the one measured cheaper for these shapes
    (see :data:`ROWS_LOWERING_MAX_SCORE` and the constants after it)."""
    check_lowering(kind)
    wp = padded_shape[2]
    o, c, kh, kw = weight_shape
    kernel_width = (kw, stride[1], dilation[1])
    if kind == "rows" or (kind == "auto" and _rows_pay(c, o, kh, kw, wp, out_hw[1])):
        return Lowering(True, (kh, 1), (stride[0], 1), (dilation[0], 1), (out_hw[0], 1), out_hw, wp, kernel_width)
    return Lowering(False, (kh, kw), stride, dilation, out_hw, out_hw, wp, kernel_width)


def _rows_pay(c: int, o: int, kh: int, kw: int, wp: int, wo: int) -> bool:
    """Whether the rows lowering should beat im2col (the measured rule of the constants above)."""
    limit = ROWS_LOWERING_MAX_SCORE_ONE_CHANNEL if c == 1 else ROWS_LOWERING_MAX_SCORE
    band_bytes = 4 * (kh * wp * c) * (wo * o)
    return o * wp / kw <= limit and band_bytes <= ROWS_LOWERING_MAX_WEIGHT_BYTES
