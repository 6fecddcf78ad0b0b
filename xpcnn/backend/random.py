"""Seeded random numbers: identical initial weights on every backend, and per-backend dropout masks.

Draws are counter-based: draw number ``k`` of a stream with seed ``s`` comes from a generator
seeded with ``(s, k)``, so a stream's whole state is two integers that a checkpoint can hold,
and resuming reproduces the draws exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xpcnn.backend.devices import Placement, from_numpy


def host_generator(*seed: int) -> np.random.Generator:
    """A NumPy generator seeded by a sequence of integers (for weights and data shuffling)."""
    return np.random.default_rng([int(s) for s in seed])


def uniform_host(seed: tuple[int, ...], shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    """float64 draws in ``[low, high)`` on the host; the same on every machine for one seed."""
    return host_generator(*seed).uniform(low, high, size=shape)


def permutation_host(n: int, *seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n)`` as an int64 NumPy array."""
    return host_generator(*seed).permutation(n)


def uniform(placement: Placement, seed: int, counter: int, shape: tuple[int, ...], dtype: Any,
            like: Any = None) -> Any:
    """Draw number ``counter`` of stream ``seed``: uniform ``[0, 1)`` values of ``dtype`` on ``placement``.

    Counter-based, so a stream's whole state is ``(seed, counter)`` and a resumed run repeats it exactly.
    With a 4-D NumPy array ``like`` stored channel-last, the draws are laid out the same way, so
    multiplying them with ``like`` runs at full speed.
    """
    p = placement
    if p.backend == "numpy" and _stored_channel_last(like, shape):
        n, c, h, w = shape
        return uniform(p, seed, counter, (n, h, w, c), dtype).transpose(0, 3, 1, 2)
    mixed = (int(seed) * 1_000_003 + int(counter)) % 2**63
    if p.backend == "cupy":
        import cupy
        with cupy.cuda.Device(p.index):
            return cupy.random.default_rng(mixed).random(shape, dtype=cupy.float32).astype(dtype, copy=False)
    if p.backend == "torch":
        import torch
        gen = torch.Generator(device=p.device).manual_seed(mixed)
        return torch.rand(shape, generator=gen, device=p.device, dtype=dtype)
    if p.backend == "jax":
        import jax
        key = jax.random.fold_in(jax.random.key(int(seed) % 2**32), int(counter))
        return jax.device_put(jax.random.uniform(key, shape, dtype=dtype), p.device)
    draws = host_generator(seed, counter).random(shape, dtype=np.float32)
    return draws.astype(dtype, copy=False) if p.backend == "numpy" else p.xp.astype(from_numpy(draws, p), dtype)


#: NumPy draws dropout decisions as 16-bit integers: ``p`` is rounded to a multiple of 1/65536.
_KEEP_LEVELS = 1 << 16


def keep_mask(placement: Placement, seed: int, counter: int, shape: tuple[int, ...], p: float,
              like: Any = None) -> Any:
    """Draw number ``counter`` of stream ``seed``: a boolean array, True with probability ``1 - p``.

    NumPy compares 16-bit random integers with ``round(p * 65536)``, the generator's raw 64-bit
    words cut in four (2.4x faster than ``Generator.integers``, 7x faster than drawing floats,
    which then need a comparison too); other backends compare uniform floats with ``p``.
    ``like`` as in :func:`uniform`.
    """
    pl = placement
    if pl.backend != "numpy":
        return uniform(pl, seed, counter, shape, pl.xp.float32, like=like) >= p
    if _stored_channel_last(like, shape):
        n, c, h, w = shape
        return keep_mask(pl, seed, counter, (n, h, w, c), p).transpose(0, 3, 1, 2)
    size = int(np.prod(shape))
    words = host_generator(seed, counter).bit_generator.random_raw(-(-size // 4))  # 4 draws per word
    draws = words.view(np.uint16)[:size].reshape(shape)
    return draws >= round(p * _KEEP_LEVELS)


def _stored_channel_last(like: Any, shape: tuple[int, ...]) -> bool:
    """Whether NumPy array ``like`` of 4-D ``shape`` is an ``(N, C, H, W)`` view of channel-last memory."""
    return (like is not None and len(shape) == 4 and like.transpose(0, 2, 3, 1).flags.c_contiguous
            and not like.flags.c_contiguous)
