"""Data augmentation on the device: random crops, horizontal flips and cutout of a batch ``(N, C, H, W)``.

Each transform is a callable ``transform(x, key) -> x``: ``x`` a batch of normalized images on any backend and
device, ``key`` a tuple of non-negative ints that alone decides the random draws. :class:`~xpcnn.training.Trainer`
passes ``key = (seed, epoch, batch)``, so batch ``b`` of epoch ``e`` gets the same crops and flips in every run,
a resumed one included, without any saved random state (the idea of :func:`xpcnn.backend.random.uniform`).

The draws are a few numbers per image (an offset, a coin), made on the host by NumPy's generator seeded with
``key`` and moved to the device; the pixels move on the device, written once against the Array API (one gather
for a crop, :func:`xpcnn.ops.crop.crop_windows`, which NumPy replaces with slice copies; one ``where`` for a flip
or a cutout; nothing is written in place, so JAX works too). The same key
therefore gives bit-identical results on NumPy, CuPy, PyTorch, JAX and array_api_strict.

Padding and cutout fill with 0 in normalized units, that is with the dataset's mean colour (as He et al.'s
CIFAR ResNets and DeVries & Taylor's cutout do, and as torchvision's ``RandomCrop`` does on normalized tensors).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from xpcnn import backend as B
from xpcnn.errors import ShapeError
from xpcnn.ops.crop import crop_windows

__all__ = ["Compose", "Cutout", "RandomCrop", "RandomHorizontalFlip", "parse_policy", "policy", "resolve_policy"]

#: Mixed into every seed here, so augmentation never draws what the shuffle or the weights draw.
_STREAM = 0x617567  # "aug"

PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


def _generator(key: Sequence[int]) -> Any:
    """NumPy's generator for ``key`` (host draws, the same on every machine and backend)."""
    return B.random.host_generator(_STREAM, *(int(k) for k in key))


def _on_device(values: Any, x: Any) -> Any:
    """Host array ``values`` on ``x``'s backend and device."""
    return B.from_numpy(values, B.placement_of(x))


def _check_batch(x: Any, name: str) -> tuple[int, int, int, int]:
    if len(x.shape) != 4:
        raise ShapeError(f"{name} takes a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    return tuple(int(d) for d in x.shape)  # type: ignore[return-value]


class RandomCrop:
    """PyTorch's ``RandomCrop(size, padding=padding, padding_mode=padding_mode)``, per image of a batch.

    Pads each image by ``padding`` pixels on all four sides, then cuts a ``size`` window at a uniformly drawn
    offset (each image its own). Arguments: ``size`` an int (square), an ``(h, w)`` pair, or None for the
    input's size (then the crop is a random translation by up to ``padding`` pixels); ``padding`` a
    non-negative int; ``padding_mode`` "constant" (0 in normalized units, the mean colour), "edge", "reflect"
    (without repeating the edge; needs ``padding < H, W``) or "symmetric" (repeating it; ``padding <= H, W``).

    Call with ``x`` ``(N, C, H, W)`` and ``key`` (see the module docstring): returns ``(N, C, h, w)`` in
    ``x``'s dtype and device. Raises :class:`ShapeError` when the window is larger than the padded images or
    the padding is too wide for the mode; ValueError for bad arguments at construction.
    """

    def __init__(self, size: int | tuple[int, int] | None = None, padding: int = 0,
                 padding_mode: str = "constant") -> None:
        if size is not None:
            size = (size, size) if isinstance(size, int) else tuple(size)
            if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
                raise ValueError(f"RandomCrop size must be a positive int, an (h, w) pair of them or None, "
                                 f"got {size!r}")
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ValueError(f"RandomCrop padding must be a non-negative int, got {padding!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"RandomCrop padding_mode must be one of {', '.join(PADDING_MODES)}, "
                             f"got {padding_mode!r}")
        self.size, self.padding, self.padding_mode = size, padding, padding_mode

    def __repr__(self) -> str:
        size = None if self.size is None else (self.size[0] if self.size[0] == self.size[1] else self.size)
        return f"RandomCrop(size={size!r}, padding={self.padding}, padding_mode={self.padding_mode!r})"

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(h, w)`` of the crops of ``height x width`` images; raises :class:`ShapeError` as documented."""
        p = self.padding
        h, w = self.size or (height, width)
        if h > height + 2 * p or w > width + 2 * p:
            raise ShapeError(f"{self!r} cannot cut {h}x{w} windows from {height}x{width} images padded to "
                             f"{height + 2 * p}x{width + 2 * p}; pass a smaller size or a larger padding")
        limit = {"reflect": min(height, width) - 1, "symmetric": min(height, width)}.get(self.padding_mode)
        if limit is not None and p > limit:
            raise ShapeError(f"{self!r}: {self.padding_mode} padding of {height}x{width} images takes at most "
                             f"{limit} pixels; pass padding={limit} or less, or padding_mode='constant'")
        return h, w

    def offsets(self, key: Sequence[int], n: int, height: int, width: int) -> tuple[Any, Any]:
        """The windows' top-left corners in the padded images: two host int64 arrays ``(n,)``."""
        h, w = self.output_size(height, width)
        gen = _generator(key)
        top = gen.integers(0, height + 2 * self.padding - h + 1, size=n, dtype="int64")
        left = gen.integers(0, width + 2 * self.padding - w + 1, size=n, dtype="int64")
        return top, left

    def __call__(self, x: Any, key: Sequence[int]) -> Any:
        n, _, height, width = _check_batch(x, "RandomCrop")
        h, w = self.output_size(height, width)
        top, left = (_on_device(v, x) for v in self.offsets(key, n, height, width))
        return crop_windows(x, top, left, (h, w), self.padding, self.padding_mode)


class RandomHorizontalFlip:
    """PyTorch's ``RandomHorizontalFlip(p)``, per image of a batch: each image is mirrored left-right with
    probability ``p`` (in [0, 1]).

    Call with ``x`` ``(N, C, H, W)`` and ``key``: returns ``(N, C, H, W)`` in ``x``'s dtype and device.
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip p must be in [0, 1], got {p!r}")
        self.p = float(p)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"

    def flips(self, key: Sequence[int], n: int) -> Any:
        """Which of ``n`` images are flipped: a host boolean array ``(n,)``."""
        return _generator(key).random(n) < self.p

    def __call__(self, x: Any, key: Sequence[int]) -> Any:
        n = _check_batch(x, "RandomHorizontalFlip")[0]
        xp = B.namespace_of(x)
        flip = _on_device(self.flips(key, n), x)
        return xp.where(flip[:, None, None, None], xp.flip(x, axis=3), x)


class Cutout:
    """Cutout (DeVries & Taylor, 2017), per image of a batch: a ``size x size`` square set to 0 (the mean
    colour, in normalized units), centred at a uniformly drawn pixel and clipped at the borders; its rows
    run from ``cy - size // 2`` to ``cy - size // 2 + size - 1`` (columns likewise).

    Call with ``x`` ``(N, C, H, W)`` and ``key``: returns ``(N, C, H, W)`` in ``x``'s dtype and device.
    """

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError(f"Cutout size must be a positive int, got {size!r}")
        self.size = size

    def __repr__(self) -> str:
        return f"Cutout(size={self.size})"

    def centres(self, key: Sequence[int], n: int, height: int, width: int) -> tuple[Any, Any]:
        """The squares' centres: two host int64 arrays ``(n,)``, rows and columns."""
        gen = _generator(key)
        return gen.integers(0, height, size=n), gen.integers(0, width, size=n)

    def __call__(self, x: Any, key: Sequence[int]) -> Any:
        n, _, height, width = _check_batch(x, "Cutout")
        xp = B.namespace_of(x)
        cy, cx = (_on_device(v - self.size // 2, x) for v in self.centres(key, n, height, width))
        rows = xp.arange(height, dtype=cy.dtype, device=B.device_of(x))[None, :] - cy[:, None]  # (n, H)
        cols = xp.arange(width, dtype=cx.dtype, device=B.device_of(x))[None, :] - cx[:, None]
        hole = (((rows >= 0) & (rows < self.size))[:, None, :, None]
                & ((cols >= 0) & (cols < self.size))[:, None, None, :])
        return xp.where(hole, xp.zeros((), dtype=x.dtype, device=B.device_of(x)), x)


class Compose:
    """Apply ``transforms`` in order; transform ``i`` gets ``key + (i,)``, so each draws its own numbers.

    Call with ``x`` ``(N, C, H, W)`` and ``key``; the output's shape is the last transform's.
    """

    def __init__(self, transforms: Sequence[Callable[[Any, tuple[int, ...]], Any]]) -> None:
        self.transforms = list(transforms)

    def __repr__(self) -> str:
        return f"Compose([{', '.join(map(repr, self.transforms))}])"

    def __call__(self, x: Any, key: Sequence[int]) -> Any:
        for i, transform in enumerate(self.transforms):
            x = transform(x, (*key, i))
        return x



#: The parts of a policy (:func:`policy`), each with the meaning of its optional ``:N``.
POLICY_PARTS = {"crop": "padding", "crop-reflect": "padding", "flip": None, "cutout": "size"}


def parse_policy(text: str) -> tuple[tuple[str, int | None], ...]:
    """The parts of policy ``text`` (see :func:`policy`) as ``(name, number or None)`` pairs, in order;
    ``()`` for "none", ``(("default", None),)`` for "default". Raises ValueError, in one line, for any other text.
    """
    text = text.strip().lower()
    if text in ("none", "default"):
        return () if text == "none" else (("default", None),)
    parts = []
    for part in text.split("+"):
        name, _, number = part.strip().partition(":")
        if name not in POLICY_PARTS:
            raise ValueError(f"unknown augmentation {name!r} in {text!r}: use default, none, or parts joined by "
                             "'+' from crop[:PADDING], crop-reflect[:PADDING], flip and cutout[:SIZE], "
                             "e.g. crop:4+flip")
        if number and (POLICY_PARTS[name] is None or not number.isdigit() or
                       (int(number) == 0 and name == "cutout")):
            what = ("takes no number" if POLICY_PARTS[name] is None
                    else f"takes a {'positive' if name == 'cutout' else 'non-negative'} int {POLICY_PARTS[name]}")
            raise ValueError(f"augmentation {part.strip()!r} in {text!r}: {name} {what}")
        if any(name == seen for seen, _ in parts):
            raise ValueError(f"augmentation {name!r} appears twice in {text!r}; name each part once")
        parts.append((name, int(number) if number else None))
    return tuple(parts)


def resolve_policy(text: str, height: int, width: int, digits: bool = False) -> str:
    """Policy ``text`` with every default filled in for ``height x width`` images, as :func:`policy` reads it:
    ``"default"`` on 32x32 colour images gives ``"crop:4+flip"``, on 28x28 digits ``"crop:2"``; "none" stays.

    Two texts that resolve alike build the same augmentation (a checkpoint records this form). Raises ValueError
    as :func:`policy` does.
    """
    parts = parse_policy(text)
    if parts == (("default", None),):
        parts = (("crop", None),) if digits else (("crop", None), ("flip", None))
    if digits and any(name == "flip" for name, _ in parts):
        raise ValueError(f"augmentation {text.strip()!r} flips handwritten digits, and a mirrored digit is another "
                         "digit or none; drop flip (e.g. --augment crop)")
    resolved = []
    for name, number in parts:
        if name.startswith("crop") and number is None:
            number = 4 if min(height, width) >= 32 else 2
        elif name == "cutout" and number is None:
            number = max(1, min(height, width) // 2)
        resolved.append(name if number is None else f"{name}:{number}")
    return "+".join(resolved) or "none"


def policy(text: str, height: int, width: int, digits: bool = False) -> Compose | None:
    """The augmentation named by ``text`` (``xpcnn train --augment``) for ``height x width`` images, or None.

    ``text`` is "none", "default", or parts joined by "+", applied in the order given:

    - ``crop[:P]``: :class:`RandomCrop` to the image's own size after zero padding by ``P`` pixels (a random
      translation); ``P`` defaults to 4 for images of 32 pixels or more each way, else 2 (28x28 digits);
    - ``crop-reflect[:P]``: the same with reflect padding, as the CIFAR-10 speed runs use;
    - ``flip``: :class:`RandomHorizontalFlip` with ``p = 0.5``;
    - ``cutout[:S]``: :class:`Cutout` of an ``S x S`` square, ``S`` by default half the smaller side.

    "default" is ``crop+flip``, or ``crop`` alone on ``digits`` (datasets of handwritten digits, where a mirrored
    image is another digit or none). Raises ValueError (one line) for a text :func:`parse_policy` refuses and
    for ``flip`` on ``digits``; :class:`ShapeError` for reflect padding too wide for the images.
    """
    transforms: list[Any] = []
    for name, number in parse_policy(resolve_policy(text, height, width, digits)):
        if name.startswith("crop"):
            transforms.append(RandomCrop(None, number, "reflect" if name == "crop-reflect" else "constant"))
            transforms[-1].output_size(height, width)  # a padding too wide for reflect: say so now
        elif name == "flip":
            transforms.append(RandomHorizontalFlip(0.5))
        else:
            transforms.append(Cutout(number))
    return Compose(transforms) if transforms else None
