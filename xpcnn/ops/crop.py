"""Windows cut from padded images, one per image at its own offset: the pixel work of a random crop."""

from __future__ import annotations

from typing import Any

from xpcnn import backend as B
from xpcnn.kernels import dispatch


def _source_index(xp: Any, target: Any, length: int, mode: str) -> tuple[Any, Any]:
    """Indices in ``[0, length)`` of padded positions ``target`` (int array, may lie outside), and a boolean
    array saying which positions are inside (None unless ``mode`` is "constant", whose outside is filled)."""
    if mode == "reflect":  # ... 2 1 | 0 1 2 ... n-1 | n-2 n-3 ...
        target = xp.abs(target)
        return xp.where(target > length - 1, 2 * (length - 1) - target, target), None
    if mode == "symmetric":  # ... 1 0 | 0 1 2 ... n-1 | n-1 n-2 ...
        target = xp.where(target < 0, -target - 1, target)
        return xp.where(target > length - 1, 2 * length - 1 - target, target), None
    inside = (target >= 0) & (target < length) if mode == "constant" else None
    return xp.clip(target, 0, length - 1), inside


@dispatch("crop_windows")
def crop_windows(x: Any, top: Any, left: Any, size: tuple[int, int], padding: int, mode: str) -> Any:
    """Window ``(h, w) = size`` of each image of ``x`` ``(N, C, H, W)`` padded by ``padding`` pixels with
    ``mode`` ("constant": zeros, "edge", "reflect", "symmetric", as ``numpy.pad``), its top-left corner at
    ``(top[i], left[i])`` in the padded image (int arrays ``(N,)`` on ``x``'s device, within range).
    Returns ``(N, C, h, w)`` in ``x``'s dtype.

    One gather from the unpadded images: each output pixel's source index, padded positions mapped back
    inside (clipped, reflected), and zeros where the constant padding lies.
    """
    n, c, height, width = (int(d) for d in x.shape)
    h, w = size
    xp, device = B.namespace_of(x), B.device_of(x)
    rows = top[:, None] + (xp.arange(h, dtype=top.dtype, device=device) - padding)  # (n, h), unpadded
    cols = left[:, None] + (xp.arange(w, dtype=left.dtype, device=device) - padding)  # (n, w)
    rows, rows_inside = _source_index(xp, rows, height, mode)
    cols, cols_inside = _source_index(xp, cols, width, mode)
    image = xp.reshape(xp.arange(n * c, dtype=top.dtype, device=device), (n, c, 1, 1)) * (height * width)
    flat = image + (rows * width)[:, None, :, None] + cols[:, None, None, :]  # (n, c, h, w) into x's values
    out = xp.reshape(xp.take(xp.reshape(x, (-1,)), xp.reshape(flat, (-1,)), axis=0), (n, c, h, w))
    if rows_inside is None:
        return out
    inside = rows_inside[:, None, :, None] & cols_inside[:, None, None, :]
    return xp.where(inside, out, xp.zeros((), dtype=x.dtype, device=device))
