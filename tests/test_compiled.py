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
def test_col2im_matches_the_numpy_path(kernel, stride, dilation, dtype, monkeypatch, rng) -> None:
    n, hp, wp, c = 3, 11, 10, 4
    ho = (hp - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    wo = (wp - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    blocks = rng.standard_normal((kernel[0] * kernel[1], 2 * ho * wo, c)).astype(dtype)
    base = rng.standard_normal((n, hp, wp, c)).astype(dtype)
    args = (blocks, (2, hp, wp, c), kernel, (ho, wo), stride, dilation)
    fast = windows.col2im(*args, out=base.copy(), first=1)
    monkeypatch.setenv(compiled.ENV_SWITCH, "0")
    assert not compiled.available()
    reference = windows.col2im(*args, out=base.copy(), first=1)
    np.testing.assert_allclose(fast, reference, rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-6)
    np.testing.assert_array_equal(fast[0], base[0])  # images outside first:first+n untouched


@pytest.mark.parametrize("kernel", [(2, 2), (3, 2), (1, 3)])
def test_first_max_grad_matches_the_numpy_path(kernel, monkeypatch, rng) -> None:
    n, ho, wo, c = 2, 4, 3, 33  # the compiled pass runs from 32 channels on
    x = rng.standard_normal((n, ho * kernel[0], wo * kernel[1], c)).astype(np.float32)
    x[0, : kernel[0], : kernel[1], :] = 0.0  # a window of ties: the first offset takes the gradient
    x[1, : kernel[0], : kernel[1], 0] = np.nan  # a NaN window: both paths give it to the last offset
    y = x.reshape(n, ho, kernel[0], wo, kernel[1], c).max(axis=(2, 4))
    g = rng.standard_normal((n, ho, wo, c)).astype(np.float32)
    fast = windows.first_max_grad(x, y, g, kernel, (ho, wo))
    monkeypatch.setenv(compiled.ENV_SWITCH, "0")
    reference = windows.first_max_grad(x, y, g, kernel, (ho, wo))
    np.testing.assert_array_equal(fast, reference)
