"""The ``(mean, std)`` images are standardized with: each entry a number (every channel alike) or a sequence of
one number per channel (RGB datasets' per-channel constants). Checked once, and written to JSON as lists."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Union

#: A mean or std: one number for every channel, or one per channel.
Stat = Union[float, tuple[float, ...]]
#: ``(mean, std)``.
Normalization = tuple[Stat, Stat]


def _stat(value: Any) -> Stat:
    """``value`` as a float, or a non-empty tuple of floats; TypeError/ValueError otherwise."""
    if isinstance(value, (str, bytes, bool)):
        raise TypeError(value)
    if isinstance(value, Sequence) or (hasattr(value, "__len__") and hasattr(value, "__iter__")):
        values = tuple(_stat(v) for v in value)
        if not values or any(isinstance(v, tuple) for v in values):
            raise ValueError(value)
        return values  # type: ignore[return-value]
    return float(value)


def checked(value: Any) -> Normalization:
    """``value`` as a ``(mean, std)`` pair whose entries are each a float or a tuple of floats (one per channel).

    Raises ValueError (``"normalization must be ..."``) for anything else: not a pair, an entry that is no number
    or an empty or nested sequence, a non-finite value, a std <= 0, or per-channel means and stds of different
    lengths.
    """
    try:
        mean, std = value
        mean, std = _stat(mean), _stat(std)
    except (TypeError, ValueError):
        raise ValueError(f"normalization must be a (mean, std) pair, each a number or a sequence of one number per "
                         f"channel, got {value!r}") from None
    means, stds = as_tuple(mean), as_tuple(std)
    if not (all(map(math.isfinite, means)) and all(math.isfinite(s) and s > 0 for s in stds)):
        raise ValueError(f"normalization must be a finite mean and a positive std, got ({mean}, {std})")
    if isinstance(mean, tuple) and isinstance(std, tuple) and len(mean) != len(std):
        raise ValueError(f"normalization must give as many means as stds (one per channel), got {len(mean)} means "
                         f"{mean} and {len(std)} stds {std}")
    return (mean, std)


def as_tuple(stat: Stat) -> tuple[float, ...]:
    """``stat`` as a tuple of floats (one number: a 1-tuple)."""
    return stat if isinstance(stat, tuple) else (stat,)


def channels(normalization: Normalization) -> int | None:
    """The channel count ``normalization`` is for, or None when both entries are single numbers (any count)."""
    for stat in normalization:
        if isinstance(stat, tuple):
            return len(stat)
    return None


def to_json(normalization: Normalization) -> list[Any]:
    """``[mean, std]`` with per-channel entries as lists: a checkpoint header's ``normalization``."""
    return [list(stat) if isinstance(stat, tuple) else float(stat) for stat in normalization]
