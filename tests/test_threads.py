"""The NumPy worker threads (xpcnn/backend/threads.py): same results as one thread, clear settings errors."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn import backend as B
from xpcnn.backend import elementwise, threads
from xpcnn.ops import conv

needs_threadpoolctl = pytest.mark.skipif(threads._blas_controller() is None,
                                         reason="threadpoolctl is not installed (pip install 'xpcnn[fast]')")


@pytest.fixture
def two_threads(monkeypatch):
    """Two workers, and pieces small enough that the test arrays are split."""
    monkeypatch.setattr(threads, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(conv, "COLUMN_BUFFER_BYTES", 4096)
    monkeypatch.setattr(conv, "THREADED_COLUMNS_BYTES", 0)

    def use(count: int) -> None:
        monkeypatch.setenv(threads.ENV_THREADS, str(count))
    use(2)
    return use


def test_workers_setting_is_checked(monkeypatch) -> None:
    monkeypatch.setenv(threads.ENV_THREADS, "two")
    with pytest.raises(ValueError, match="XPCNN_NUM_THREADS must be a whole number of threads, got 'two'"):
        threads.workers()
    monkeypatch.setenv(threads.ENV_THREADS, "0")
    with pytest.raises(ValueError, match="at least 1"):
        threads.workers()
    monkeypatch.setenv(threads.ENV_THREADS, "1")
    assert threads.workers() == 1


@needs_threadpoolctl
@pytest.mark.parametrize("n", [1, 2, 7])
def test_split_batch_covers_every_index_once(n, two_threads) -> None:
    seen = np.zeros(n, dtype=np.int64)

    def mark(a: int, b: int) -> None:
        seen[a:b] += 1
    threads.split_batch(mark, n, np.zeros(n))
    np.testing.assert_array_equal(seen, np.ones(n))


@needs_threadpoolctl
def test_parallel_map_keeps_order_and_raises_worker_errors(two_threads) -> None:
    like = np.zeros(3)
    assert threads.parallel_map(lambda k: k * k, list(range(9)), like=like) == [k * k for k in range(9)]

    def fail(k: int) -> int:
        if k == 5:
            raise ArithmeticError("chunk 5")
        return k
    with pytest.raises(ArithmeticError, match="chunk 5"):
        threads.parallel_map(fail, list(range(9)), like=like)


@needs_threadpoolctl
@pytest.mark.parametrize("stride, padding, dilation", [((1, 1), (1, 1, 1, 1), (1, 1)), ((2, 1), (0, 1, 2, 0), (1, 2))])
@pytest.mark.parametrize("lowering", ["columns", "rows", "tiles"])
def test_threaded_convolution_matches_one_thread(stride, padding, dilation, lowering, two_threads, monkeypatch,
                                                 rng) -> None:
    x = B.channels_first(rng.standard_normal((9, 10, 11, 3)))  # channel-last memory, as between layers
    weight, bias = rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    pools = []
    pool = threads._pool
    monkeypatch.setattr(threads, "_pool", lambda count: pools.append(count) or pool(count))
    results = []
    for count in (2, 1):
        two_threads(count)
        y, ctx = conv.conv2d_forward(x, weight, bias, stride, padding, dilation, lowering)
        assert len(ctx.chunks) > 2
        grads = conv.conv2d_backward(np.cos(y), ctx)
        results.append((y, *grads))
    # im2col chunks ran on the pool (forward and backward); the banded lowering always runs in one thread.
    assert pools == ([2, 2] if lowering == "columns" else [])
    for threaded, serial in zip(*results):
        np.testing.assert_allclose(threaded, serial, rtol=1e-12, atol=1e-12)


@needs_threadpoolctl
def test_threaded_elementwise_and_pooling_match_the_standard_expressions(two_threads, rng) -> None:
    x = B.channels_first(rng.standard_normal((6, 8, 8, 5)).astype(np.float32))
    g = B.channels_first(rng.standard_normal((6, 8, 8, 5)).astype(np.float32))
    y = elementwise.relu(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0.0))
    assert y.strides == x.strides  # the output keeps the input's channel-last layout
    np.testing.assert_array_equal(elementwise.relu_grad(g, y), g * (y > 0))
    np.testing.assert_array_equal(elementwise.multiply(g, x), g * x)
    xl = B.channels_last(x)
    windows = [B.window_index(i, j, (4, 4), (2, 2), (1, 1)) for i in range(2) for j in range(2)]
    expected = np.maximum(np.maximum(xl[windows[0]], xl[windows[1]]), np.maximum(xl[windows[2]], xl[windows[3]]))
    np.testing.assert_array_equal(B.window_max(xl, windows), expected)


@needs_threadpoolctl
@pytest.mark.parametrize("n, most", [(1, 4), (32, 6), (128, 54), (7, 100), (5, 1)])
def test_batch_ranges_are_even_for_the_workers(n, most, two_threads) -> None:
    for count in (1, 2):
        two_threads(count)
        ranges = threads.batch_ranges(n, most, like=np.zeros(n))
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a < b == c for (a, b), (c, _) in zip(ranges, ranges[1:] + [(n, None)]))
        assert max(b - a for a, b in ranges) <= most
        if count == 2 and len(ranges) > 1:
            assert len(ranges) % 2 == 0 or len(ranges) == n
            assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1
