"""Timing and memory measurement that must know the backend: device sync, matmul peak, memory pools."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from xpcnn.backend.devices import Placement, from_numpy


def synchronize(placement: Placement) -> None:
    """Wait until the device has finished queued work (a no-op on the CPU backends)."""
    if placement.backend == "cupy":
        import cupy
        cupy.cuda.Device(placement.index).synchronize()
    elif placement.backend == "torch" and placement.kind == "cuda":
        import torch
        torch.cuda.synchronize(placement.device)


def block_until_ready(x: Any) -> Any:
    """JAX dispatches asynchronously: wait for ``x`` to be computed (identity elsewhere)."""
    ready = getattr(x, "block_until_ready", None)
    return ready() if callable(ready) else x


def matmul_peak_gflops(placement: Placement, size: int = 1024, repeats: int = 5) -> float:
    """Measured float32 GFLOP/s of a ``size`` x ``size`` matrix product on ``placement``: the machine's ceiling."""
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
    """Start a fresh peak-memory window (GPU pools only)."""
    if placement.backend == "cupy":
        import cupy
        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
    elif placement.backend == "torch" and placement.kind == "cuda":
        import torch
        torch.cuda.reset_peak_memory_stats(placement.device)


def peak_memory_bytes(placement: Placement) -> int | None:
    """Device memory high-water mark where the backend reports one (CuPy pool total, torch CUDA), else None."""
    if placement.backend == "cupy":
        import cupy
        return int(cupy.get_default_memory_pool().total_bytes())
    if placement.backend == "torch" and placement.kind == "cuda":
        import torch
        return int(torch.cuda.max_memory_allocated(placement.device))
    return None


def process_peak_rss_bytes() -> int:
    """This process's peak resident memory so far.

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
