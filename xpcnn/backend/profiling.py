"""Timing and memory measurement that must know the backend: device sync, matmul peak, memory pools."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from xpcnn.backend.devices import Placement, from_numpy


def synchronize(placement: Placement) -> None:
    """Wait until ``placement``'s device has finished queued work (CuPy, torch on CUDA; a no-op elsewhere)."""
    placement.library.synchronize(placement)


def block_until_ready(x: Any) -> Any:
    """JAX dispatches asynchronously: wait for array ``x`` to be computed; returns ``x`` (identity elsewhere)."""
    ready = getattr(x, "block_until_ready", None)
    return ready() if callable(ready) else x


def matmul_peak_gflops(placement: Placement, size: int = 1024, repeats: int = 5) -> float:
    """Measured float32 GFLOP/s of a ``size`` x ``size`` matrix product on ``placement``: the machine's ceiling.

    The best of ``repeats`` timed products after one warm-up, each waited for with :func:`synchronize`.
    """
    host = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    a = from_numpy(host, placement)
    block_until_ready(a @ a)
    synchronize(placement)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        block_until_ready(a @ a)
        synchronize(placement)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def reset_peak_memory(placement: Placement) -> None:
    """Start a fresh peak-memory window on ``placement`` (GPU pools only: CuPy, torch on CUDA)."""
    placement.library.reset_peak_memory(placement)


def peak_memory_bytes(placement: Placement) -> int | None:
    """Device memory high-water mark in bytes where the backend reports one (CuPy pool total, torch CUDA), else None."""
    return placement.library.peak_memory_bytes(placement)


def process_peak_rss_bytes() -> int:
    """This process's peak resident memory so far, in bytes.

    Reads Linux's VmHWM, which starts afresh at exec; ``ru_maxrss`` would not do: Linux copies it
    from the parent at fork, so a child of a large process reports the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
