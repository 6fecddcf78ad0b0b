"""The optional numba kernels (xpcnn[fast]) against the NumPy paths they replace."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn.backend import compiled, windows

pytestmark = pytest.mark.skipif(not compiled.available(), reason="numba is not installed (pip install 'xpcnn[fast]')")


@pytest.mark.parametrize("kernel, stride, dilation", [
    ((3, 3), (1, 1), (1, 1)), ((5, 5), (1, 1), (1, 1)), ((3, 2), (2, 1), (1, 1)),
    ((2, 3), (1, 2), (2, 1)), ((3, 3), (2, 2), (2, 2)), ((1, 1), (3, 3), (1, 1)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_col2im_matmul_matches_the_numpy_path(kernel, stride, dilation, dtype, monkeypatch, rng) -> None:
    n, hp, wp, c, o = 3, 11, 10, 4, 5
    ho = (hp - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    wo = (wp - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    g = rng.standard_normal((2 * ho * wo, o)).astype(dtype)
    w_matrix = rng.standard_normal((kernel[0] * kernel[1] * c, o)).astype(dtype)
    base = rng.standard_normal((n, hp, wp, c)).astype(dtype)
    args = (g, w_matrix, (2, hp, wp, c), kernel, (ho, wo), stride, dilation)
    fast = windows.col2im_matmul(*args, out=base.copy(), first=1)
    monkeypatch.setenv(compiled.ENV_SWITCH, "0")
    assert not compiled.available()
    reference = windows.col2im_matmul(*args, out=base.copy(), first=1)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(fast, reference, rtol=tolerance, atol=tolerance)
    np.testing.assert_array_equal(fast[0], base[0])  # images outside first:first+n untouched


@pytest.mark.parametrize("kernel", [(2, 2), (3, 2), (1, 3)])
@pytest.mark.parametrize("c", [1, 8, 33])
def test_first_max_grad_matches_the_numpy_path(kernel, c, monkeypatch, rng) -> None:
    n, ho, wo = 2, 4, 3
    x = rng.standard_normal((n, ho * kernel[0], wo * kernel[1], c)).astype(np.float32)
    x[0, : kernel[0], : kernel[1], :] = 0.0  # a window of ties: the first offset takes the gradient
    x[1, : kernel[0], : kernel[1], 0] = np.nan  # a NaN window: both paths give it to the last offset
    y = x.reshape(n, ho, kernel[0], wo, kernel[1], c).max(axis=(2, 4))
    g = rng.standard_normal((n, ho, wo, c)).astype(np.float32)
    fast = windows.first_max_grad(x, y, g, kernel, (ho, wo))
    monkeypatch.setenv(compiled.ENV_SWITCH, "0")
    reference = windows.first_max_grad(x, y, g, kernel, (ho, wo))
    np.testing.assert_array_equal(fast, reference)


@pytest.mark.parametrize("optimizer, weight_decay", [("Adam", 0.0), ("Adam", 0.1), ("AdamW", 0.05)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_step_matches_the_numpy_path(optimizer, weight_decay, dtype, monkeypatch, rng) -> None:
    from xpcnn import Sequential, manual_seed, optim
    from xpcnn.layers import Dense

    def run(use_compiled: bool) -> tuple[np.ndarray, np.ndarray]:
        monkeypatch.setenv(compiled.ENV_SWITCH, "1" if use_compiled else "0")
        manual_seed(3)
        model = Sequential([Dense(600, 700)]).to("cpu")  # 1.7 MB of weights: split over the worker threads
        model.layers[0].params = {k: v.astype(dtype) for k, v in model.layers[0].params.items()}
        opt = getattr(optim, optimizer)(model, lr=1e-2, weight_decay=weight_decay)
        grads = np.random.default_rng(7)
        for _ in range(4):
            layer = model.layers[0]
            layer.grads = {k: grads.standard_normal(v.shape).astype(dtype) for k, v in layer.params.items()}
            opt.step()
        return model.layers[0].params["weight"], opt.state["0.weight"]["exp_avg_sq"]

    calls = []
    kernel = compiled.adam_update
    monkeypatch.setattr(compiled, "adam_update", lambda *args: calls.append(1) or kernel(*args))
    fast, reference = run(True), run(False)
    assert len(calls) >= 3 * 2  # steps 2-4 of weight and bias ran compiled (step 1 creates the slots)
    tolerance = 2e-6 if dtype == np.float32 else 1e-13
    for a, b in zip(fast, reference):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("kernel", [(2, 2), (3, 2), (1, 3)])
@pytest.mark.parametrize("c", [1, 6, 33])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mean_pool_kernels_match_the_numpy_path(kernel, c, dtype, monkeypatch, rng) -> None:
    n, ho, wo = 3, 4, 5
    x = rng.standard_normal((n, ho * kernel[0], wo * kernel[1], c)).astype(dtype)
    g = rng.standard_normal((n, ho, wo, c)).astype(dtype)
    slices = [windows.window_index(i, j, (ho, wo), kernel, (1, 1)) for i in range(kernel[0]) for j in range(kernel[1])]
    def passes() -> tuple:
        y, pooled = windows.tanh_window_mean(x, slices, kernel, True)
        return (windows.window_mean(x, slices, kernel, True), windows.spread_mean_grad(g, x.shape, kernel, slices, True),
                y, pooled, windows.spread_mean_grad(g, x.shape, kernel, slices, True, tanh_y=y))
    fast = passes()
    monkeypatch.setenv(compiled.ENV_SWITCH, "0")
    slow = passes()
    tolerance = 1e-6 if dtype == np.float32 else 1e-14  # (1 - y*y) rounds differently with a fused multiply-add
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("setting, wide", [("1", True), ("0", False)])
def test_wide_vectors_follow_the_cpu_and_the_switch(setting, wide) -> None:
    """numba gets 512-bit vectors (``-prefer-256-bit``) where the CPU has AVX-512, unless switched off;
    the direct kernels' lane count follows."""
    import json
    import os
    import subprocess
    import sys

    import llvmlite.binding as llvm
    script = ("import json, os, xpcnn\nfrom xpcnn.backend import compiled\n"
              "print(json.dumps([compiled.vector_lanes(), os.environ.get('NUMBA_CPU_FEATURES', '')]))")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_FEATURES"} | {compiled.WIDE_ENV: setting}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    lanes, features = json.loads(done.stdout)
    avx512 = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
    assert lanes == (16 if wide and avx512 else 8)
    assert ("-prefer-256-bit" in features.split(",")) is (wide and avx512)
