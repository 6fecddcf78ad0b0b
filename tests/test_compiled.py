"""The numba kernels against the reference ops they replace."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_kernels

import xpcnn
from xpcnn.backend import windows
from xpcnn.kernels import find
from xpcnn.kernels.numpy import compiled
from xpcnn.kernels.numpy.conv import _col2im_matmul
from xpcnn.kernels.numpy.lowering import choose_lowering
from xpcnn.ops import fused, normalization, pool

pytestmark = pytest.mark.skipif(not compiled.available(), reason="numba is not installed (pip install numba)")


@pytest.fixture(autouse=True)
def _numpy_kernels(accelerator: str) -> None:
    needs_kernels(accelerator)  # these test the compiled kernels themselves


@pytest.mark.parametrize("kernel, stride, dilation", [
    ((3, 3), (1, 1), (1, 1)), ((5, 5), (1, 1), (1, 1)), ((3, 2), (2, 1), (1, 1)),
    ((2, 3), (1, 2), (2, 1)), ((3, 3), (2, 2), (2, 2)), ((1, 1), (3, 3), (1, 1)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_col2im_matmul_matches_the_numpy_path(kernel, stride, dilation, dtype, rng) -> None:
    n, hp, wp, c, o = 3, 11, 10, 4, 5
    ho = (hp - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    wo = (wp - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    g = rng.standard_normal((2 * ho * wo, o)).astype(dtype)
    w_matrix = rng.standard_normal((kernel[0] * kernel[1] * c, o)).astype(dtype)
    base = rng.standard_normal((n, hp, wp, c)).astype(dtype)
    plan = choose_lowering((2, hp, wp, c), (o, c, *kernel), stride, dilation, (ho, wo), "columns")
    fast = base.copy()
    _col2im_matmul(g, w_matrix, fast, 1, plan)
    reference = windows.col2im_matmul(g, w_matrix, (2, hp, wp, c), kernel, (ho, wo), stride, dilation,
                                      out=base.copy(), first=1)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(fast, reference, rtol=tolerance, atol=tolerance)
    np.testing.assert_array_equal(fast[0], base[0])  # images outside first:first+n untouched


@pytest.mark.parametrize("kernel", [(2, 2), (3, 2), (1, 3)])
@pytest.mark.parametrize("c", [1, 8, 33])
def test_first_max_grad_matches_the_numpy_path(kernel, c, rng) -> None:
    n, ho, wo = 2, 4, 3
    x = rng.standard_normal((n, ho * kernel[0], wo * kernel[1], c)).astype(np.float32)
    x[0, : kernel[0], : kernel[1], :] = 0.0  # a window of ties: the first offset takes the gradient
    x[1, : kernel[0], : kernel[1], 0] = np.nan  # a NaN window: both paths give it to the last offset
    y = x.reshape(n, ho, kernel[0], wo, kernel[1], c).max(axis=(2, 4))
    g = rng.standard_normal((n, ho, wo, c)).astype(np.float32)
    assert find("max_pool_grad", "numpy", g, x, y, kernel, kernel, (ho, wo)) is not None
    fast = pool.max_pool_grad(g, x, y, kernel, kernel, (ho, wo))
    reference = pool.max_pool_grad.reference(g, x, y, kernel, kernel, (ho, wo))
    np.testing.assert_array_equal(fast, reference)


@pytest.mark.parametrize("optimizer, weight_decay", [("Adam", 0.0), ("Adam", 0.1), ("AdamW", 0.05)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_step_matches_the_numpy_path(optimizer, weight_decay, dtype, monkeypatch, rng) -> None:
    from xpcnn import Sequential, manual_seed, optim
    from xpcnn.layers import Dense

    def run(use_compiled: bool) -> tuple[np.ndarray, np.ndarray]:
        manual_seed(3)
        model = Sequential([Dense(600, 700)]).to("cpu")  # 1.7 MB of weights: split over the worker threads
        model.layers[0].params = {k: v.astype(dtype) for k, v in model.layers[0].params.items()}
        opt = getattr(optim, optimizer)(model, lr=1e-2, weight_decay=weight_decay)
        grads = np.random.default_rng(7)
        with xpcnn.settings(kernels=use_compiled, num_threads=2, split_min_bytes=0):
            for _ in range(4):
                layer = model.layers[0]
                layer.grads = {k: grads.standard_normal(v.shape).astype(dtype) for k, v in layer.params.items()}
                opt.step()
        return model.layers[0].params["weight"], opt.state["0.weight"]["exp_avg_sq"]

    calls = []
    kernel = compiled.adam_update
    monkeypatch.setattr(compiled, "adam_update", lambda *args: calls.append(1) or kernel(*args))
    fast, reference = run(True), run(False)
    assert len(calls) >= 4 * 2  # every step of weight and bias ran compiled, in pieces
    tolerance = 2e-6 if dtype == np.float32 else 1e-13
    for a, b in zip(fast, reference):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("kernel", [(2, 2), (3, 2), (1, 3)])
@pytest.mark.parametrize("c", [1, 6, 33])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mean_pool_kernels_match_the_numpy_path(kernel, c, dtype, rng) -> None:
    n, ho, wo = 3, 4, 5
    x = rng.standard_normal((n, ho * kernel[0], wo * kernel[1], c)).astype(dtype)
    g = rng.standard_normal((n, ho, wo, c)).astype(dtype)
    geometry = (kernel, kernel, (ho, wo))

    def passes() -> tuple:
        y, pooled = fused.tanh_window_mean(x, *geometry)
        return (pool.window_mean(x, *geometry), pool.mean_pool_grad(g, x.shape, *geometry),
                y, pooled, fused.tanh_mean_pool_grad(g, y, *geometry))
    with xpcnn.settings(kernels=True):
        assert find("tanh_mean_pool_grad", "numpy", g, x, *geometry) is not None
        fast = passes()
    with xpcnn.settings(kernels=False):
        slow = passes()
    tolerance = 1e-6 if dtype == np.float32 else 1e-14  # (1 - y*y) rounds differently with a fused multiply-add
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("call", [True, False])
def test_wide_vectors_only_on_an_explicit_call(call) -> None:
    """numba gets 512-bit vectors (``-prefer-256-bit``) where the CPU has AVX-512 only after
    ``xpcnn.enable_wide_vectors()``; importing and training leave numba's configuration alone."""
    import json
    import os
    import subprocess
    import sys

    import llvmlite.binding as llvm
    script = ("import json, numpy, xpcnn, numba\n"
              + ("print(xpcnn.enable_wide_vectors())\n" if call else "print(False)\n")
              + "from xpcnn.kernels.numpy import compiled\n"
              "print(json.dumps([compiled.vector_lanes(), numba.core.config.CPU_FEATURES or '']))")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_FEATURES"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    enabled, report = done.stdout.strip().splitlines()
    lanes, features = json.loads(report)
    avx512 = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
    assert lanes == (16 if call and avx512 else 8)
    assert enabled == str(call and avx512)
    assert ("-prefer-256-bit" in features.split(",")) is (call and avx512)


def _batch(rng: np.random.Generator, shape: tuple[int, int, int, int], dtype: type, channel_last: bool) -> np.ndarray:
    n, c, h, w = shape
    base = (rng.standard_normal((n, h, w, c)) * 3 + 5).astype(dtype)  # off-centre: the variance must keep its digits
    x = base.transpose(0, 3, 1, 2)
    return x if channel_last else np.ascontiguousarray(x)


@pytest.mark.parametrize("shape", [(4, 16, 8, 8), (3, 3, 5, 7), (1, 1, 2, 3), (2, 5, 1, 1), (1, 3, 1, 2)])
@pytest.mark.parametrize("channel_last", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu-fused"])
def test_batch_norm_kernel_matches_the_reference(shape, channel_last, dtype, training, relu, rng) -> None:
    c = shape[1]
    x = _batch(rng, shape, dtype, channel_last)
    gamma, beta, mean = (rng.standard_normal(c).astype(dtype) for _ in range(3))
    var = (rng.random(c) + 0.5).astype(dtype)
    args = (x, gamma, beta, mean, var, training, 0.1, 1e-5)
    assert find("batch_norm2d_forward", "numpy", *args, relu=relu) is not None
    fast = normalization.batch_norm2d_forward(*args, relu=relu)
    reference = normalization.batch_norm2d_forward.reference(*args, relu=relu)
    grad_y = _batch(rng, shape, dtype, not channel_last)  # the other memory order: the kernel copies it
    assert find("batch_norm2d_backward", "numpy", grad_y, gamma, fast[3]) is not None
    fast_grads = normalization.batch_norm2d_backward(grad_y, gamma, fast[3])
    reference_grads = normalization.batch_norm2d_backward.reference(grad_y, gamma, reference[3])
    crossed = normalization.batch_norm2d_backward.reference(grad_y, gamma, fast[3])  # either backward, either ctx
    tolerance = 2e-5 if dtype == np.float32 else 1e-12
    for got, want in zip((*fast[:3], fast[3].x_hat, fast[3].inv_std, *fast_grads, *crossed),
                         (*reference[:3], reference[3].x_hat, reference[3].inv_std, *reference_grads,
                          *reference_grads)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * (1 + np.max(np.abs(want))))
    if relu:
        assert np.all(fast[0] >= 0) and np.any(reference[0] == 0)
        assert np.array_equal(fast[0] > 0, reference[0] > 0)
    for out in (fast[0], fast_grads[0]):  # the input's memory order kept
        assert out.flags.c_contiguous == x.flags.c_contiguous
        assert out.transpose(0, 2, 3, 1).flags.c_contiguous == x.transpose(0, 2, 3, 1).flags.c_contiguous
    assert (fast[3].count, fast[3].training) == (reference[3].count, reference[3].training)


def test_batch_norm_kernel_leaves_other_arrays_to_the_reference(rng) -> None:
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    stats = [np.ones(3, np.float32) for _ in range(4)]
    assert find("batch_norm2d_forward", "numpy", x[:, :, ::2], *stats, True) is None  # strided: neither layout
    assert find("batch_norm2d_forward", "numpy", x, *[s.astype(np.float64) for s in stats], True) is None
    with xpcnn.settings(kernels=False):
        assert find("batch_norm2d_forward", "numpy", x, *stats, True) is None
