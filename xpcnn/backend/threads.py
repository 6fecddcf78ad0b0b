"""Chunk-parallel loops for NumPy: independent pieces of an op on a small thread pool.

NumPy runs its copies and elementwise passes on one core, and OpenBLAS parallelizes each GEMM
on its own. A convolution over a batch is a loop of independent chunks (gather patches, one
GEMM, scatter gradients), so running whole chunks on ``workers()`` threads, with OpenBLAS held
to one thread meanwhile, also spreads the copies over the cores. NumPy and the compiled kernels
release the GIL inside those passes.

Two conditions make this pay (both measured, see bench/results/optimization-log.md):

- OpenBLAS's idle workers must go to sleep soon after a GEMM. By default they spin for about
  0.1 s (``2**28`` cycles), taking a core from the pool's threads; ``OPENBLAS_THREAD_TIMEOUT=4``
  lets them sleep after ``2**4`` cycles. OpenBLAS reads it once, when NumPy loads it, so importing
  xpcnn before NumPy sets it (unless the user set it); if NumPy came first without it, the pool
  stays off.
- ``threadpoolctl`` must be installed (``pip install 'xpcnn[fast]'``) to hold OpenBLAS to one
  thread inside the pool.

``XPCNN_NUM_THREADS`` overrides the worker count (``1`` turns the pool off).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import cache
from itertools import pairwise
from typing import Any, TypeVar

ENV_THREADS = "XPCNN_NUM_THREADS"
SPIN_ENV = "OPENBLAS_THREAD_TIMEOUT"
#: log2 of the cycles an idle OpenBLAS worker spins before sleeping (OpenBLAS accepts 4..30).
SPIN_LOG2_CYCLES = "4"
#: A pool is used only where OpenBLAS would sleep soon: at most this log2 cycle count.
_SHORT_SPIN_MAX = 20

#: Arrays below this size are not split over threads: element-wise passes over smaller ones
#: (2-11 MiB: mnist-cnn at batch 32, seed-deep at 128) measured slower split than in one thread.
SPLIT_MIN_BYTES = 16 * 2**20

T = TypeVar("T")
R = TypeVar("R")

# Runs when xpcnn.backend is first imported, before it imports NumPy.
_NUMPY_WAS_LOADED = "numpy" in sys.modules
if not _NUMPY_WAS_LOADED:
    os.environ.setdefault(SPIN_ENV, SPIN_LOG2_CYCLES)
_SPIN_AT_LOAD = os.environ.get(SPIN_ENV)


def short_blas_spin() -> bool:
    """True when OpenBLAS was (very likely) loaded with a short idle spin (see the module docstring)."""
    try:
        return int(_SPIN_AT_LOAD or "") <= _SHORT_SPIN_MAX
    except ValueError:
        return False


def workers() -> int:
    """How many threads chunk-parallel loops use: ``$XPCNN_NUM_THREADS``, else the usable cores when
    the pool can pay (short OpenBLAS spin), else 1. Without threadpoolctl it is always 1: OpenBLAS could
    not be held to one thread inside the pool."""
    value = os.environ.get(ENV_THREADS)
    if value:
        try:
            count = int(value)
        except ValueError:
            raise ValueError(f"{ENV_THREADS} must be a whole number of threads, got {value!r}: "
                             f"set it to e.g. 2, or unset it to use the usable cores") from None
        if count < 1:
            raise ValueError(f"{ENV_THREADS} must be at least 1, got {count}: set 1 to turn the worker "
                             f"threads off, or unset it to use the usable cores")
        return count if _blas_controller() is not None else 1
    if not short_blas_spin() or _blas_controller() is None:
        return 1
    return _usable_cores()


def parallel_map(fn: Callable[[T], R], items: Sequence[T], like: Any) -> list[R]:
    """``[fn(item) for item in items]``, on ``workers()`` threads with OpenBLAS held to one thread
    when ``like`` is a NumPy array (other backends parallelize their own ops, or are immutable).

    ``fn`` must be safe to run concurrently (each call writes only its own part of any shared output).
    With one worker, or one item, it runs in the caller's thread, unchanged.
    """
    count = min(workers(), len(items)) if _is_numpy(like) else 1
    if count <= 1:
        return [fn(item) for item in items]
    with _blas_controller().limit(limits=1, user_api="blas"):
        pool = _pool(count)
        return _results([pool.submit(fn, item) for item in items])


def batch_ranges(n: int, most: int, like: Any) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges covering ``0..n`` with at most ``most`` images each: as few as that
    allows, and, where ``like`` would run on the worker threads, a multiple of their number in
    near-equal sizes, so no thread is left with the odd last chunk."""
    most = max(1, most)
    workers_here = min(workers(), n) if _is_numpy(like) else 1
    if workers_here == 1:  # plain chunks of ``most``: the last one takes the remainder
        return [(a, min(a + most, n)) for a in range(0, n, most)]
    count = -(-n // most)
    if count > 1:
        count = min(n, -(-count // workers_here) * workers_here)
    return [(n * k // count, n * (k + 1) // count) for k in range(count)]


def split_batch(fn: Callable[[int, int], None], n: int, like: Any, min_bytes: int = SPLIT_MIN_BYTES) -> None:
    """Call ``fn(start, stop)`` on contiguous ranges that cover ``0..n`` of the batch axis: one range
    per worker thread, in parallel, when ``like`` is a NumPy array of at least ``min_bytes`` (compute-bound
    callers pass 0); otherwise ``fn(0, n)`` in the caller's thread. ``fn`` writes only its own range of any output.
    """
    count = min(workers(), n) if _is_numpy(like) and like.nbytes >= min_bytes else 1
    if count <= 1:
        fn(0, n)
        return
    bounds = [n * k // count for k in range(count + 1)]
    pool = _pool(count)
    pending = [pool.submit(fn, a, b) for a, b in pairwise(bounds[1:])]
    try:
        fn(bounds[0], bounds[1])
    finally:
        _results(pending)


def _results(futures: list[Future]) -> list[Any]:
    """The futures' results, in order, once all have finished, even if Ctrl-C arrives meanwhile:
    the caller (a trainer saving a checkpoint, say) must never see arrays a worker is still writing."""
    interrupted = None
    while True:
        try:
            wait(futures)
            break
        except KeyboardInterrupt as error:  # pragma: no cover - timing-dependent
            interrupted = error
    if interrupted is not None:
        raise interrupted
    return [future.result() for future in futures]


def _is_numpy(x: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and type(x) is numpy.ndarray


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@cache
def _pool(count: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="xpcnn")


@cache
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()
