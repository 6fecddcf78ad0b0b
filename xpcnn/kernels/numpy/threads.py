"""Worker threads for the NumPy kernels: independent pieces of an op on a small thread pool.

NumPy runs its copies and element-wise passes on one core, and OpenBLAS parallelizes each GEMM on
its own threads. The kernels here split a batch (or a matrix product) into pieces and run whole
pieces on :func:`workers` threads instead, so copies, compiled loops and GEMMs all spread over the
cores; NumPy and the compiled kernels release the GIL inside those passes.

OpenBLAS's own threads must stay out of the way meanwhile: after a multi-threaded GEMM they spin for
about 0.1 s before sleeping (unless OpenBLAS was loaded with a short ``OPENBLAS_THREAD_TIMEOUT``),
taking a core from the pool. So while a model's step runs (:func:`single_threaded_blas`, entered by
``Sequential.forward``/``backward`` and ``Optimizer.step``), OpenBLAS is held to one thread
(threadpoolctl, a dependency of xpcnn), never gets a job for its workers, and every GEMM large
enough to matter runs on the pool. Without threadpoolctl the pool stays off (one worker).

The worker count is ``xpcnn.settings.current().num_threads`` (default: the usable cores).
"""

from __future__ import annotations

import itertools
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from functools import cache
from typing import Any, TypeVar

import numpy

from xpcnn.settings import current

T = TypeVar("T")
R = TypeVar("R")


def workers() -> int:
    """Threads the chunk-parallel loops use: the ``num_threads`` setting, else the usable cores; 1
    without threadpoolctl (OpenBLAS could not be held to one thread inside the pool)."""
    if _blas_libraries() is None:
        return 1
    count = current().num_threads
    return count if count is not None else _usable_cores()


_hold_lock = threading.Lock()
_hold_depth = 0
_hold_saved: list[int] = []


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold OpenBLAS (NumPy's BLAS) to one thread inside the block, where the worker threads run;
    restored on exit. Nested blocks cost two integer updates; the outermost about 2 us."""
    global _hold_depth, _hold_saved
    libraries = _blas_libraries() if workers() > 1 else None
    if not libraries:
        yield
        return
    with _hold_lock:
        _hold_depth += 1
        if _hold_depth == 1:
            _hold_saved = [lib.get_num_threads() for lib in libraries]
            for lib in libraries:
                lib.set_num_threads(1)
    try:
        yield
    finally:
        with _hold_lock:
            _hold_depth -= 1
            if _hold_depth == 0:
                for lib, count in zip(libraries, _hold_saved):
                    lib.set_num_threads(count)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], threaded: bool = True) -> list[R]:
    """``[fn(item) for item in items]``, on the worker threads (OpenBLAS held to one thread) when
    ``threaded`` and there are several; else in the caller's thread. ``fn`` must write only its own
    part of any shared output.

    The caller's thread is one of the workers: it and ``count - 1`` pool threads take the items in turn
    from one counter, so each call wakes one thread fewer than it uses, and none waits idle while items
    are left."""
    count = min(workers(), len(items)) if threaded else 1
    if count <= 1:
        return [fn(item) for item in items]
    results: list[Any] = [None] * len(items)
    turns = itertools.count()  # next() on it is atomic under the GIL: each index is taken once

    def take_turns() -> None:
        for i in iter(turns.__next__, None):
            if i >= len(items):
                return
            results[i] = fn(items[i])

    with single_threaded_blas():
        pool = _pool(count - 1)
        pending = [pool.submit(take_turns) for _ in range(count - 1)]
        try:
            take_turns()
        finally:
            _results(pending)
    return results


def even_ranges(n: int, count: int) -> list[tuple[int, int]]:
    """``count`` contiguous ``(start, stop)`` ranges covering ``0..n``, their sizes differing by at most one."""
    return [(n * k // count, n * (k + 1) // count) for k in range(count)]


def per_worker(n: int) -> list[tuple[int, int]]:
    """:func:`even_ranges` of ``n`` items, one range per worker thread (fewer where ``n`` is smaller)."""
    return even_ranges(n, max(1, min(workers(), n)))


def batch_ranges(n: int, most: int, threaded: bool = True) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges covering ``0..n`` with at most ``most`` images each: as few as that
    allows and, where the pieces run on the worker threads, a multiple of their number in near-equal
    sizes, so no thread is left with the odd last chunk."""
    most = max(1, most)
    workers_here = min(workers(), n) if threaded else 1
    if workers_here == 1:  # plain chunks of ``most``: the last one takes the remainder
        return [(a, min(a + most, n)) for a in range(0, n, most)]
    count = -(-n // most)
    if count > 1:
        count = min(n, -(-count // workers_here) * workers_here)
    return even_ranges(n, count)


def split_batch(fn: Callable[[int, int], None], n: int, threaded: bool = True) -> None:
    """Call ``fn(start, stop)`` on contiguous ranges covering ``0..n``: one per worker thread, in
    parallel, when ``threaded``; else ``fn(0, n)`` in the caller's thread. ``fn`` writes only its range."""
    count = min(workers(), n) if threaded else 1
    if count <= 1:
        fn(0, n)
        return
    (first, last), *rest = even_ranges(n, count)
    with single_threaded_blas():
        pool = _pool(count - 1)
        pending = [pool.submit(fn, a, b) for a, b in rest]
        try:
            fn(first, last)
        finally:
            _results(pending)


def big(x: numpy.ndarray) -> bool:
    """Whether an element-wise pass over ``x`` is worth splitting (the ``split_min_bytes`` setting)."""
    return x.nbytes >= current().split_min_bytes


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


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@cache
def _pool(count: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="xpcnn")


@cache
def _blas_libraries() -> list[Any] | None:
    """threadpoolctl's controllers of the BLAS libraries loaded (NumPy's OpenBLAS), or None without threadpoolctl."""
    before = os.environ.get(_KMP_VARIABLE)
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        warnings.warn("threadpoolctl is not installed, so the NumPy kernels run on one thread; install it with: "
                      "pip install threadpoolctl", RuntimeWarning, stacklevel=2)
        return None
    finally:  # threadpoolctl's import sets it for the whole process; xpcnn leaves the environment as it was
        if before is None:
            os.environ.pop(_KMP_VARIABLE, None)
    return list(ThreadpoolController().select(user_api="blas").lib_controllers)


#: The variable threadpoolctl sets when imported (Intel OpenMP's duplicate-runtime switch).
_KMP_VARIABLE = "KMP_DUPLICATE_LIB_OK"
