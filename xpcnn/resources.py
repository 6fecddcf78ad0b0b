"""Up-front memory estimates: refuse, in one line, what cannot fit in this machine's memory before allocating it.

The estimates are lower bounds (parameters alone; a batch's activations and their gradients alone), so they
never refuse a run that could fit; a run that passes them can still run out of memory, which the ``xpcnn``
command reports in one line too (:mod:`xpcnn.cli.main`).
"""

from __future__ import annotations

import os
from typing import Any

from xpcnn.errors import ResourceError


def physical_memory_bytes() -> int | None:
    """This machine's physical memory in bytes, or None where the system does not say (then nothing is refused)."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None


def format_bytes(count: float) -> str:
    """``3.55 PiB``, ``512 MiB``, ``100 bytes``: binary units, three significant digits."""
    for unit, size in (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20),
                       ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{int(count)} bytes"


def exceeds_memory(nbytes: float) -> int | None:
    """This machine's memory in bytes if ``nbytes`` is more than it, else None."""
    memory = physical_memory_bytes()
    return memory if memory is not None and nbytes > memory else None


def check_parameter_memory(shape: tuple[int, ...], itemsize: int = 8) -> None:
    """Raise :class:`ResourceError` if a parameter of ``shape`` in ``itemsize``-byte floats needs more than this
    machine's memory, before it is allocated: ``Dense(10**6, 10**6)`` would otherwise end in a MemoryError."""
    count = 1
    for d in shape:
        count *= int(d)
    memory = exceeds_memory(count * itemsize)
    if memory is not None:
        raise ResourceError(f"layer weights of shape {tuple(shape)} need {format_bytes(count * itemsize)} to "
                            f"initialize, more than this machine's memory ({format_bytes(memory)}); use smaller "
                            "layer sizes")


def batch_activation_bytes(model: Any, input_shape: tuple[int, ...], itemsize: int) -> int:
    """A lower bound on the bytes one training step of ``model`` needs per image of ``input_shape``
    (``(1, C, H, W)``): every layer's output and its gradient, in ``itemsize``-byte floats."""
    shape, count = tuple(input_shape), 0
    for layer in model.layers:
        shape = layer.output_shape(shape)
        numel = 1
        for d in shape[1:]:
            numel *= int(d)
        count += numel
    return 2 * count * itemsize


def check_batch_memory(model: Any, input_shape: tuple[int, ...], batch_size: int, images: int, itemsize: int) -> None:
    """Raise :class:`ResourceError` if a batch of ``min(batch_size, images)`` images of ``input_shape``
    (``(1, C, H, W)``) cannot fit in this machine's memory, saying the largest batch size that might."""
    per_image = batch_activation_bytes(model, input_shape, itemsize)
    used = min(batch_size, images)
    memory = exceeds_memory(per_image * used)
    if memory is None:
        return
    shown = f"batch size {batch_size:,}" + (f" ({used:,} images per step)" if used < batch_size else "")
    largest = max(1, memory // max(per_image, 1))
    raise ResourceError(f"{shown} needs at least {format_bytes(per_image * used)} for this model's activations "
                        f"and their gradients, more than this machine's memory ({format_bytes(memory)}); pass a "
                        f"smaller batch size (at most about {largest:,})")
