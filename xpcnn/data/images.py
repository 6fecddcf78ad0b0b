"""Reading user images (PNG/JPEG) for ``xpcnn predict`` and preparing them like a dataset's images: MNIST-style
digits fitted in 20x20 and centred by mass in 28x28, anything else (Fashion-MNIST's items) only resized.

Both ways the result is light on dark, as the datasets are: an image whose border is light (dark ink on
paper) is inverted. Transparency is composited onto a background that contrasts with what is drawn (black
ink on a transparent background becomes black on white), never dropped.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xpcnn.backend import host
from xpcnn.errors import DataError


def _decoded(path: str | os.PathLike, convert: Callable[[Any], Any]) -> Any:
    """``convert(image)`` of the image Pillow opens at ``path``, fully decoded inside the file's context.

    Raises :class:`DataError` naming the file when it is missing, not an image Pillow reads, or larger than
    Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 million pixels).
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("reading images needs Pillow: pip install 'xpcnn[images]'") from None
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # over the limit: refuse, don't warn
            with Image.open(path) as image:
                image.load()
                return convert(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: the image is too large to read ({_pixels(path, exc)}, more than the "
                        f"{Image.MAX_IMAGE_PIXELS:,} pixels Pillow reads safely); scale it down, a few hundred "
                        "pixels a side is plenty") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read it as an image ({exc})") from None


def read_grey(path: str | os.PathLike) -> host.ndarray:
    """The image in file ``path`` as grey levels ``(H, W)`` float32 in [0, 255], transparency composited.

    An image with transparency (RGBA, LA, a palette or grey image with a transparent colour) is composited
    onto white when what it draws (its pixels weighted by their opacity) is dark, onto black when it is light.

    Raises :class:`DataError` naming the file when it is missing, not an image Pillow reads, or larger than
    Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 million pixels).
    """
    def convert(image: Any) -> tuple[Any, bool]:
        transparent = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
        return (image.convert("RGBA").convert("LA") if transparent else image.convert("L")), transparent

    la, transparent = _decoded(path, convert)
    xp = host.xp
    pixels = xp.astype(xp.asarray(la), xp.float32)
    if not transparent:
        return pixels
    grey, alpha = pixels[..., 0], pixels[..., 1] / 255.0
    opacity = float(xp.sum(alpha))
    ink = float(xp.sum(grey * alpha)) / opacity if opacity > 0 else 0.0
    background = 255.0 if ink < 127.5 else 0.0
    return grey * alpha + background * (1.0 - alpha)


def read_photo(path: str | os.PathLike, size: int, channels: int = 3) -> host.ndarray:
    """The image in file ``path`` as uint8 ``(channels, size, size)``: converted to RGB (``channels=3``) or grey
    (``channels=1``) as torchvision's ImageFolder loader does (``convert("RGB")``; transparency is dropped, the
    colours under it kept), then resized to ``size`` x ``size`` with bilinear filtering (antialiased when it
    shrinks; the aspect ratio is not kept, as ``torchvision.transforms.Resize((size, size))``). Never inverted:
    the way ``image-folder`` and CIFAR images are prepared, for training and for ``xpcnn predict`` alike.

    Raises :class:`DataError` naming the file as :func:`read_grey` says; ValueError for ``channels`` other
    than 1 or 3 or a ``size`` below 1.
    """
    if channels not in (1, 3) or size < 1:
        raise ValueError(f"read_photo: channels must be 1 or 3 and size positive, got {channels} and {size}")

    def convert(image: Any) -> Any:
        from PIL import Image
        converted = image.convert("RGB" if channels == 3 else "L")
        if converted.size != (size, size):
            converted = converted.resize((size, size), Image.BILINEAR)
        return host.xp.asarray(converted)

    xp = host.xp
    pixels = xp.astype(_decoded(path, convert), xp.uint8)
    return pixels[None] if channels == 1 else xp.permute_dims(pixels, (2, 0, 1))


def _pixels(path: Path, exc: BaseException) -> str:
    """The size of a too-large image, ``"20000x20000 = 400,000,000 pixels"`` (the width and height from a PNG's
    header; other formats: the pixel count from Pillow's message)."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        return f"{width}x{height} = {width * height:,} pixels"
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(found.group(1)):,} pixels" if found else str(exc)


def is_blank(grey: host.ndarray) -> bool:
    """Whether image ``grey`` (any shape) is one value everywhere: nothing drawn, nothing to classify."""
    xp = host.xp
    return bool(xp.max(grey) == xp.min(grey))


def _light_on_dark(grey: host.ndarray) -> host.ndarray:
    """``grey`` inverted when its border (the outermost rows and columns) is light on average: dark ink on
    paper becomes light on dark, like the datasets' images."""
    xp = host.xp
    border = xp.concat([grey[0, :], grey[-1, :], grey[:, 0], grey[:, -1]])
    return 255.0 - grey if float(xp.mean(border)) > 127.5 else grey


def prepare(grey: host.ndarray, digits: bool = True, size: int = 28) -> host.ndarray:
    """A ``(size, size)`` uint8 image like a dataset's from grey levels ``(H, W)`` in [0, 255] (:func:`read_grey`):
    light on dark (inverted when the border is light), then, for ``digits`` (MNIST-style datasets), the drawing
    cropped, scaled to fit a 20x20 box (of 28x28) and centred by its centre of mass; otherwise (Fashion-MNIST
    and others) padded to a square with the background and resized. A blank image gives zeros."""
    xp = host.xp
    pixels = _light_on_dark(grey)
    if digits:
        return _centred_digit(pixels, size)
    h, w = pixels.shape
    side = max(h, w)
    square = xp.zeros((side, side), dtype=xp.float32)
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = pixels
    return _resized(square, size, size)


def _resized(pixels: host.ndarray, width: int, height: int) -> host.ndarray:
    """``pixels`` (float, [0, 255]) as uint8 ``(height, width)``, resampled with Lanczos (unchanged at its size)."""
    from PIL import Image
    xp = host.xp
    small = xp.astype(xp.clip(xp.round(pixels), 0, 255), xp.uint8)
    if tuple(small.shape) == (height, width):
        return small
    return xp.asarray(Image.fromarray(small).resize((width, height), Image.LANCZOS))


def _centred_digit(pixels: host.ndarray, size: int) -> host.ndarray:
    """MNIST's preparation: the drawing's bounding box fitted in a 20x20 box, centred by mass in ``size`` x ``size``."""
    xp = host.xp
    peak = float(xp.max(pixels))
    mask = pixels > 0.2 * peak if peak > 0 else pixels > 0
    rows, cols = xp.nonzero(xp.any(mask, axis=1))[0], xp.nonzero(xp.any(mask, axis=0))[0]
    if rows.shape[0] == 0:
        return xp.zeros((size, size), dtype=xp.uint8)
    crop = pixels[int(rows[0]):int(rows[-1]) + 1, int(cols[0]):int(cols[-1]) + 1]
    box = round(size * 20 / 28)
    scale = box / max(crop.shape)
    new_w, new_h = max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))
    small = xp.astype(_resized(crop, new_w, new_h), xp.float32)
    total = float(xp.sum(small)) or 1.0
    cy = float(xp.sum(xp.sum(small, axis=1) * xp.arange(new_h))) / total
    cx = float(xp.sum(xp.sum(small, axis=0) * xp.arange(new_w))) / total
    top = min(max(round(size / 2 - cy), 0), size - new_h)
    left = min(max(round(size / 2 - cx), 0), size - new_w)
    canvas = xp.zeros((size, size), dtype=xp.float32)
    canvas[top:top + new_h, left:left + new_w] = small
    return xp.astype(xp.clip(canvas, 0, 255), xp.uint8)


def load_image(path: str | os.PathLike, digits: bool = True, size: int = 28) -> host.ndarray:
    """A ``(size, size)`` uint8 image from file ``path``, prepared as :func:`prepare` says. Raises
    :class:`DataError` as :func:`read_grey` says."""
    return prepare(read_grey(path), digits, size)


def load_digit(path: str | os.PathLike, size: int = 28) -> host.ndarray:
    """A ``(size, size)`` uint8 image prepared like MNIST: grey, light-on-dark, the drawing scaled to fit a
    20x20 box and centred by its centre of mass. Raises :class:`DataError` if the file cannot be read."""
    return load_image(path, digits=True, size=size)
