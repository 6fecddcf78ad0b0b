"""The NumPy worker threads (xpcnn/kernels/numpy/threads.py): same results as one thread, OpenBLAS held to
one thread inside a step and restored after, clear settings errors."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import backend as B
from xpcnn.kernels.numpy import threads
from xpcnn.ops import conv
from xpcnn.settings import from_environ

needs_threadpoolctl = pytest.mark.skipif(threads._blas_libraries() is None,
                                         reason="threadpoolctl is not installed (pip install threadpoolctl)")

#: Every split threshold at zero and small patch chunks: the test arrays are cut into pieces.
PIECES = {"split_min_bytes": 0, "column_buffer_bytes": 4096, "direct_split_min_flops": 0, "split_min_matmul_flops": 0}


def test_thread_setting_is_read_and_checked() -> None:
    with pytest.raises(ValueError, match="XPCNN_NUM_THREADS must be a whole number of threads, got 'two'"):
        from_environ({"XPCNN_NUM_THREADS": "two"})
    with pytest.raises(ValueError, match="XPCNN_NUM_THREADS must be at least 1"):
        from_environ({"XPCNN_NUM_THREADS": "0"})
    assert from_environ({"XPCNN_NUM_THREADS": "1"}).num_threads == 1
    assert from_environ({}).num_threads is None
    assert from_environ({"XPCNN_NUMBA": "0"}).kernels is False and from_environ({"XPCNN_KERNELS": "1"}).kernels
    with pytest.raises(ValueError, match="num_threads must be a whole number of at least 1"):
        with xpcnn.settings(num_threads=0):
            pass
    with pytest.raises(TypeError, match="unknown setting.*num_thread\\b"):
        with xpcnn.settings(num_thread=2):
            pass


def test_an_override_ends_with_its_block_even_on_error() -> None:
    before = xpcnn.settings.current()
    with pytest.raises(ArithmeticError):
        with xpcnn.settings(num_threads=3):
            assert xpcnn.settings.current().num_threads == 3
            raise ArithmeticError
    assert xpcnn.settings.current() == before


@needs_threadpoolctl
@pytest.mark.parametrize("n", [1, 2, 7])
def test_split_batch_covers_every_index_once(n) -> None:
    seen = np.zeros(n, dtype=np.int64)

    def mark(a: int, b: int) -> None:
        seen[a:b] += 1
    with xpcnn.settings(num_threads=2):
        threads.split_batch(mark, n)
    np.testing.assert_array_equal(seen, np.ones(n))


@needs_threadpoolctl
def test_parallel_map_keeps_order_and_raises_worker_errors() -> None:
    def fail(k: int) -> int:
        if k == 5:
            raise ArithmeticError("chunk 5")
        return k
    with xpcnn.settings(num_threads=2):
        assert threads.parallel_map(lambda k: k * k, list(range(9))) == [k * k for k in range(9)]
        with pytest.raises(ArithmeticError, match="chunk 5"):
            threads.parallel_map(fail, list(range(9)))


@needs_threadpoolctl
def test_blas_is_held_to_one_thread_inside_a_step_and_restored() -> None:
    """Inside Sequential's step OpenBLAS runs one thread (the worker threads run the pieces); the user's
    setting is back afterwards, also after an error inside the step."""
    libraries = threads._blas_libraries()
    if not libraries:
        pytest.skip("no BLAS library that threadpoolctl controls is loaded")
    before = [lib.get_num_threads() for lib in libraries]
    seen = []

    class Spy(xpcnn.layers.Flatten):
        def forward(self, x):
            seen.append([lib.get_num_threads() for lib in libraries])
            raise ArithmeticError("inside the step")
    model = xpcnn.Sequential([Spy()])
    with xpcnn.settings(kernels=True, num_threads=2), pytest.raises(ArithmeticError):
        model.forward(np.zeros((2, 3), np.float32))
    assert seen == [[1] * len(libraries)]
    assert [lib.get_num_threads() for lib in libraries] == before


@needs_threadpoolctl
@pytest.mark.parametrize("stride, padding, dilation", [((1, 1), (1, 1, 1, 1), (1, 1)), ((2, 1), (0, 1, 2, 0), (1, 2))])
@pytest.mark.parametrize("lowering", ["columns", "rows", "tiles"])
def test_threaded_convolution_matches_one_thread(stride, padding, dilation, lowering, monkeypatch, rng) -> None:
    x = B.channels_first(rng.standard_normal((9, 10, 11, 3)))  # channel-last memory, as between layers
    weight, bias = rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    pools = []
    pool = threads._pool
    monkeypatch.setattr(threads, "_pool", lambda count: pools.append(count) or pool(count))
    results = []
    for count in (2, 1):
        with xpcnn.settings(kernels=True, num_threads=count, **PIECES):
            y, ctx = conv.conv2d_forward(x, weight, bias, stride, padding, dilation, lowering)
            assert len(ctx.chunks) > 2
            grads = conv.conv2d_backward(np.cos(y), ctx)
        results.append((y, *grads))
    # the chunks ran on the pool, forward and backward, and the bias gradient's pieces
    assert pools == [1, 1, 1]  # the caller's thread and a pool of one more each time
    for threaded, serial in zip(*results):
        np.testing.assert_allclose(threaded, serial, rtol=1e-12, atol=1e-12)


@needs_threadpoolctl
def test_threaded_elementwise_and_pooling_match_the_reference(rng) -> None:
    from xpcnn.ops import activations, dropout, pool
    x = B.channels_first(rng.standard_normal((6, 8, 8, 5)).astype(np.float32))
    g = B.channels_first(rng.standard_normal((6, 8, 8, 5)).astype(np.float32))
    with xpcnn.settings(kernels=True, num_threads=2, **PIECES):
        y = activations.relu_forward(x)
        assert y.strides == x.strides  # the output keeps the input's channel-last layout
        results = [y, activations.relu_backward(g, y), activations.tanh_backward(g, y), dropout.dropout_forward(g, x),
                   pool.window_max(B.channels_last(x), (2, 2), (2, 2), (4, 4))]
    with xpcnn.settings(kernels=False):
        y = activations.relu_forward(x)
        expected = [y, activations.relu_backward(g, y), activations.tanh_backward(g, y), dropout.dropout_forward(g, x),
                    pool.window_max(B.channels_last(x), (2, 2), (2, 2), (4, 4))]
    for a, b in zip(results, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@needs_threadpoolctl
@pytest.mark.parametrize("n, most", [(1, 4), (32, 6), (128, 54), (7, 100), (5, 1)])
def test_batch_ranges_are_even_for_the_workers(n, most) -> None:
    for count in (1, 2):
        with xpcnn.settings(num_threads=count):
            ranges = threads.batch_ranges(n, most)
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a < b == c for (a, b), (c, _) in zip(ranges, ranges[1:] + [(n, None)]))
        assert max(b - a for a, b in ranges) <= most
        if count == 2 and len(ranges) > 1:
            assert len(ranges) % 2 == 0 or len(ranges) == n
            assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1
