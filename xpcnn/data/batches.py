"""Turning a split into normalized batches on a device, shuffled reproducibly per epoch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from xpcnn import backend as B
from xpcnn.backend import host
from xpcnn.data.datasets import Split
from xpcnn.data.normalization import Stat, as_tuple
from xpcnn.distributed.sharding import Shard, num_steps, shard_batches
from xpcnn.errors import ShapeError

#: Datasets up to this size (float32 bytes) are moved to the device once, not batch by batch.
RESIDENT_LIMIT_BYTES = 2 * 2**30


def image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(C, H, W)`` of a batch of images shaped ``(N, H, W)`` (one channel) or ``(N, C, H, W)``.

    Raises :class:`ShapeError` for any other rank, and for channel-last ``(N, H, W, C)`` images (last axis
    1, 3 or 4 after a spatial axis over 4), saying to transpose them to ``(N, C, H, W)``.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    if len(shape) == 4:
        if shape[3] in (1, 3, 4) and shape[1] > 4:
            n, h, w, c = shape
            raise ShapeError(f"images of shape {shape} are channel-last (N, H, W, {c}); xpcnn takes (N, {c}, H, W): "
                             f"pass images.transpose(0, 3, 1, 2), shape {(n, c, h, w)}")
        return (shape[1], shape[2], shape[3])
    hint = "; for one image pass images[None]" if len(shape) == 2 else ""
    raise ShapeError(f"expected images (N, H, W) or (N, C, H, W), got shape {shape}{hint}")


def normalize(images: host.ndarray, mean: Stat, std: Stat) -> host.ndarray:
    """uint8 ``(N, H, W)`` or ``(N, C, H, W)`` (any C: grey, RGB, ...) -> float32 ``(N, C, H, W)``: scale to
    [0, 1], then standardize with ``mean`` and ``std``, each a number (every channel alike) or a sequence of
    C numbers (one per channel, as ``torchvision.transforms.Normalize``).

    Raises :class:`ShapeError` as :func:`image_shape` says (channel-last ``(N, H, W, 3)`` images: transpose
    them to ``(N, 3, H, W)``), and when a per-channel ``mean`` or ``std`` has another length than C."""
    xp = host.xp
    c, h, w = image_shape(images.shape)
    check_channels(mean, std, c)
    x = xp.astype(images, xp.float32) / 255.0
    x = xp.reshape(x, (x.shape[0], c, h, w))
    return (x - _per_channel(mean)) / _per_channel(std)


def check_channels(mean: Stat, std: Stat, c: int) -> None:
    """Raise :class:`ShapeError` when a per-channel ``mean`` or ``std`` does not have ``c`` entries."""
    for name, stat in (("mean", mean), ("std", std)):
        if isinstance(stat, tuple) and len(stat) != c:
            raise ShapeError(f"the normalization's {name} {stat} has {len(stat)} entries but the images have {c} "
                             f"channel{'s' * (c != 1)}; pass one number, or one per channel")


def _per_channel(stat: Stat) -> host.ndarray | float:
    """A number as it is; a per-channel sequence as float32 ``(1, C, 1, 1)``, to broadcast over a batch."""
    if not isinstance(stat, tuple):
        return stat
    xp = host.xp
    return xp.reshape(xp.asarray(as_tuple(stat), dtype=xp.float32), (1, len(stat), 1, 1))


def channel_statistics(images: host.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and std (population) of uint8 ``images`` ``(N, H, W)`` or ``(N, C, H, W)`` scaled to
    [0, 1], as ``((mean_0, ...), (std_0, ...))``: the normalization of a dataset without published constants
    (``image-folder``). Summed in float64 over chunks of ``chunk`` images; a channel that is one value
    everywhere gets std 1. Raises :class:`ShapeError` as :func:`image_shape` says, and for no images."""
    xp = host.xp
    c, h, w = image_shape(images.shape)
    n = int(images.shape[0])
    if n == 0:
        raise ShapeError("no images to compute the normalization from")
    total = xp.zeros(c, dtype=xp.float64)
    squares = xp.zeros(c, dtype=xp.float64)
    for first in range(0, n, chunk):
        x = xp.reshape(xp.astype(images[first:first + chunk], xp.float64), (-1, c, h * w)) / 255.0
        total += xp.sum(x, axis=(0, 2))
        squares += xp.sum(x * x, axis=(0, 2))
    count = n * h * w
    means = [float(v) / count for v in total]
    stds = [max(float(q) / count - m * m, 0.0) ** 0.5 for q, m in zip(squares, means)]
    return tuple(means), tuple(s if s > 1e-6 else 1.0 for s in stds)


class DeviceData:
    """A split's normalized images and labels held on a placement (moved once when they fit). ``mean`` and
    ``std`` as :func:`normalize` takes them (a number, or one per channel); a per-channel one of another length
    than the images' channels is a :class:`ShapeError` here, before anything moves."""

    def __init__(self, split: Split, placement: B.Placement, mean: Stat, std: Stat, dtype: str = "float32"):
        self.placement = placement
        self.count = len(split)
        self.mean, self.std, self.dtype = mean, std, dtype
        self.resident = split.images.size * 4 <= RESIDENT_LIMIT_BYTES
        self.split = split
        check_channels(mean, std, image_shape(split.images.shape)[0])
        if self.resident:
            x = normalize(split.images, mean, std)
            self.images = B.from_numpy(host.xp.astype(x, getattr(host.xp, dtype)), placement)
            self.labels = B.from_numpy(split.labels, placement)

    def batch(self, indices: host.ndarray) -> tuple[Any, Any]:
        """Images ``(B, C, H, W)`` and labels ``(B,)`` at host ``indices``, on the device."""
        if self.resident:
            xp = self.placement.xp
            if indices[-1] - indices[0] + 1 == len(indices) and bool(host.xp.all(indices[1:] > indices[:-1])):
                start, stop = int(indices[0]), int(indices[-1]) + 1  # a contiguous run: slice, don't gather
                return self.images[start:stop, ...], self.labels[start:stop]
            idx = B.from_numpy(indices, self.placement)
            return xp.take(self.images, idx, axis=0), xp.take(self.labels, idx, axis=0)
        x = normalize(self.split.images[indices], self.mean, self.std)
        return (B.from_numpy(host.xp.astype(x, getattr(host.xp, self.dtype)), self.placement),
                B.from_numpy(self.split.labels[indices], self.placement))

    def batches(self, batch_size: int, shuffle_seed: tuple[int, ...] | None = None, start: int = 0,
                shard: Shard | None = None) -> Iterator[tuple[Any, Any]]:
        """Yield batches from batch number ``start``; shuffled by the seeded permutation if a seed is given.

        ``shard``: only this rank's part of each global batch, as :mod:`xpcnn.distributed.sharding` says."""
        for indices in self.batch_indices(batch_size, shuffle_seed, start, shard):
            yield self.batch(indices)

    def batch_indices(self, batch_size: int, shuffle_seed: tuple[int, ...] | None = None, start: int = 0,
                      shard: Shard | None = None) -> Iterator[host.ndarray]:
        """The host index arrays of :meth:`batches`."""
        order = (B.random.permutation_host(self.count, *shuffle_seed) if shuffle_seed is not None
                 else host.xp.arange(self.count))
        return shard_batches(order, batch_size, shard, start)

    def num_batches(self, batch_size: int, shard: Shard | None = None) -> int:
        return num_steps(self.count, batch_size, shard)
