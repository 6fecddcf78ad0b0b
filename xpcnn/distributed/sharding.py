"""Which images each of K ranks takes: the same global batches as one process, cut into K equal parts.

Training (``drop_remainder=True``): every rank holds the same seeded permutation of the N images. Its first
``N - N % K`` positions are read in global batches of ``K * batch_size``, and each global batch is cut into K
equal, consecutive parts: rank r takes part r. So every rank runs ``ceil((N // K) / batch_size)`` steps with
batches of equal size, and step s of a K-rank run sees exactly the images of step s of one process with
batch ``K * batch_size`` (the last step's aside). The ``N % K`` images at the end of each epoch's permutation
are left out of that epoch (other images each epoch, as the permutation changes), like PyTorch's
``DistributedSampler(drop_last=True)``; ChainerMN's ``scatter_dataset`` instead repeats a few images so that
the shards are equal.

Evaluation (``drop_remainder=False``): every image is read exactly once; the parts of a global batch differ
by at most one image between ranks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple


class Shard(NamedTuple):
    """This process's part of the data: ``rank`` of ``size`` ranks; see the module docstring."""

    rank: int
    size: int
    drop_remainder: bool = True


def shard_batches(order: Any, batch_size: int, shard: Shard | None, start: int = 0) -> Iterator[Any]:
    """Index arrays of this rank's batches (``batch_size`` per rank), from step ``start``, cut from the 1-D
    host index array ``order`` (the epoch's permutation, or ``arange``). ``shard=None``: one process."""
    rank, size, drop = shard if shard is not None else (0, 1, True)
    count = len(order) - (len(order) % size if drop else 0)
    global_batch = batch_size * size
    for first in range(start * global_batch, count, global_batch):
        part = order[first:min(first + global_batch, count)]
        n = len(part)
        mine = part[rank * n // size:(rank + 1) * n // size]
        if len(mine):  # empty only in evaluation, for a last global batch of fewer than K images
            yield mine


def num_steps(count: int, batch_size: int, shard: Shard | None) -> int:
    """Steps of one epoch over ``count`` images with ``batch_size`` per rank (the same on every rank)."""
    size, drop = (shard.size, shard.drop_remainder) if shard is not None else (1, True)
    usable = count - (count % size if drop else 0)
    return -(-usable // (batch_size * size))
