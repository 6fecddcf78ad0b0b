"""Reading user images (PNG/JPEG) and preparing them like MNIST digits."""

from __future__ import annotations

import os
from pathlib import Path

from xpcnn.backend import host
from xpcnn.errors import DataError


def load_digit(path: str | os.PathLike, size: int = 28) -> host.ndarray:
    """A ``(size, size)`` uint8 image prepared like MNIST: grey, light-on-dark, the drawing scaled to fit a
    20x20 box and centred by its centre of mass. Raises :class:`DataError` if the file cannot be read."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("reading images needs Pillow: pip install 'xpcnn[images]'") from None
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            grey = image.convert("L")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read it as an image ({exc})") from None
    xp = host.xp
    pixels = xp.astype(xp.asarray(grey), xp.float32)
    if float(xp.mean(pixels)) > 127:  # dark ink on light paper: invert to MNIST's light-on-dark
        pixels = 255.0 - pixels
    mask = pixels > 0.2 * float(xp.max(pixels)) if float(xp.max(pixels)) > 0 else pixels > 0
    rows, cols = xp.nonzero(xp.any(mask, axis=1))[0], xp.nonzero(xp.any(mask, axis=0))[0]
    if rows.shape[0] == 0:
        return xp.zeros((size, size), dtype=xp.uint8)
    crop = pixels[int(rows[0]):int(rows[-1]) + 1, int(cols[0]):int(cols[-1]) + 1]
    box = round(size * 20 / 28)
    scale = box / max(crop.shape)
    new_w, new_h = max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))
    small = Image.fromarray(xp.astype(xp.clip(crop, 0, 255), xp.uint8)).resize((new_w, new_h), Image.LANCZOS)
    small = xp.astype(xp.asarray(small), xp.float32)
    total = float(xp.sum(small)) or 1.0
    cy = float(xp.sum(xp.sum(small, axis=1) * xp.arange(new_h))) / total
    cx = float(xp.sum(xp.sum(small, axis=0) * xp.arange(new_w))) / total
    top = min(max(round(size / 2 - cy), 0), size - new_h)
    left = min(max(round(size / 2 - cx), 0), size - new_w)
    canvas = xp.zeros((size, size), dtype=xp.float32)
    canvas[top:top + new_h, left:left + new_w] = small
    return xp.astype(xp.clip(canvas, 0, 255), xp.uint8)
