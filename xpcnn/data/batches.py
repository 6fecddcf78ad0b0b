"""Turning a split into normalized batches on a device, shuffled reproducibly per epoch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from xpcnn import backend as B
from xpcnn.backend import host
from xpcnn.data.datasets import Split

#: Datasets up to this size (float32 bytes) are moved to the device once, not batch by batch.
RESIDENT_LIMIT_BYTES = 2 * 2**30


def normalize(images: host.ndarray, mean: float, std: float) -> host.ndarray:
    """uint8 ``(N, H, W)`` or ``(N, C, H, W)`` -> float32 ``(N, C, H, W)``: scale to [0, 1], then standardize."""
    xp = host.xp
    x = xp.astype(images, xp.float32) / 255.0
    if len(x.shape) == 3:
        x = xp.reshape(x, (x.shape[0], 1, x.shape[1], x.shape[2]))
    return (x - mean) / std


class DeviceData:
    """A split's normalized images and labels held on a placement (moved once when they fit)."""

    def __init__(self, split: Split, placement: B.Placement, mean: float, std: float, dtype: str = "float32"):
        self.placement = placement
        self.count = len(split)
        self.mean, self.std, self.dtype = mean, std, dtype
        self.resident = split.images.size * 4 <= RESIDENT_LIMIT_BYTES
        self.split = split
        if self.resident:
            x = normalize(split.images, mean, std)
            self.images = B.from_numpy(host.xp.astype(x, getattr(host.xp, dtype)), placement)
            self.labels = B.from_numpy(split.labels, placement)

    def batch(self, indices: host.ndarray) -> tuple[Any, Any]:
        """Images ``(B, 1, H, W)`` and labels ``(B,)`` at host ``indices``, on the device."""
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

    def batches(self, batch_size: int, shuffle_seed: tuple[int, ...] | None = None, start: int = 0
                ) -> Iterator[tuple[Any, Any]]:
        """Yield batches from batch number ``start``; shuffled by the seeded permutation if a seed is given."""
        order = (B.random.permutation_host(self.count, *shuffle_seed) if shuffle_seed is not None
                 else host.xp.arange(self.count))
        for first in range(start * batch_size, self.count, batch_size):
            yield self.batch(order[first:first + batch_size])

    def num_batches(self, batch_size: int) -> int:
        return -(-self.count // batch_size)
