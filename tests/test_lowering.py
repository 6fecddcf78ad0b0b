"""The convolution lowerings: which one "auto" picks, and that they agree with each other."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_kernels

import xpcnn
from xpcnn import layers as L
from xpcnn.kernels.numpy import compiled, conv
from xpcnn.kernels.numpy import direct as direct_kernels
from xpcnn.kernels.numpy.lowering import choose_lowering
from xpcnn.ops.conv import conv2d_backward


@pytest.fixture(autouse=True)
def _numpy_kernels(accelerator: str) -> None:
    needs_kernels(accelerator)  # these test the NumPy kernels themselves


@pytest.mark.parametrize("c, o, k, h, kind", [
    (8, 8, 5, 24, "tiles"),     # seed-deep's second conv: few output channels and a row 24 wide
    (1, 8, 5, 28, "rows"),      # seed-deep's first conv: one channel, tile rows of 40 values are too short
    (6, 16, 5, 14, "rows"),     # lenet5's second conv: rows waste only 14/5, tiles 8/5
    (1, 32, 3, 28, "columns"),  # mnist-cnn's first conv: 32 outputs x 9 wasted columns -> im2col
    (1, 8, 3, 28, "columns"),   # seed-simple's conv: one input channel, score 75 -> im2col
    (16, 8, 3, 28, "columns"),  # score 75 but a 1.1 MiB banded weight -> im2col
    (32, 64, 3, 26, "columns"),  # mnist-cnn's second conv
])
def test_auto_picks_the_measured_winner(c, o, k, h, kind) -> None:
    out = h - k + 1
    plan = choose_lowering((128, h, h, c), (o, c, k, k), (1, 1), (1, 1), (out, out))
    assert plan.kind == kind
    assert plan.banded is (kind != "columns")


@pytest.mark.parametrize("c, o, kh, kw, stride, padding, dilation, hw", [
    (8, 8, 5, 5, 1, 0, 1, (24, 24)),   # seed-deep's second conv
    (3, 5, 3, 2, 2, 1, 1, (11, 13)),   # stride 2: tiles start 2*t columns apart
    (2, 4, 3, 3, 1, 2, 2, (9, 10)),    # dilation 2
    (2, 3, 4, 3, 3, 1, 1, (13, 17)),   # stride 3, a view narrower than the padded input
])
@pytest.mark.parametrize("tile", [1, 2, 3, 4, 5, 100])
def test_tiles_of_any_width_match_im2col(c, o, kh, kw, stride, padding, dilation, hw, tile, rng) -> None:
    """Every tile width (one column, ones that leave a partial last tile, wider than the output)
    gives im2col's output and gradients in float64."""
    x = rng.standard_normal((3, c, *hw))
    weight, bias = rng.standard_normal((o, c, kh, kw)), rng.standard_normal(o)
    geometry = ((stride, stride), (padding,) * 4, (dilation, dilation))
    results = []
    for kind in ("columns", "tiles"):
        def plan(*args, kind=kind, **kwargs):
            return choose_lowering(*args[:5], kind, tile=tile)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(conv, "choose_lowering", plan)
            y, ctx = conv.conv2d_forward(x, weight, bias, *geometry, kind)
            assert ctx.lowering.kind == kind
            grad_y = np.cos(np.arange(y.size, dtype=np.float64)).reshape(y.shape)
            results.append((y, *conv2d_backward(grad_y, ctx)))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_lowerings_agree_on_a_preset_sized_conv(rng) -> None:
    """All lowerings give the same output and gradients (float64) on a mid-sized layer."""
    x = rng.standard_normal((4, 8, 12, 12))
    grad_y = rng.standard_normal((4, 16, 6, 6))
    results = []
    for lowering in ("columns", "rows", "tiles"):
        layer = L.Conv2D(8, 16, 3, stride=2, padding=1, seed=3, lowering=lowering)
        layer.params = {k: np.asarray(v, dtype=np.float64) for k, v in layer.params.items()}
        y = layer.forward(x)
        results.append((y, layer.backward(grad_y), layer.grads["weight"], layer.grads["bias"]))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


needs_numba = pytest.mark.skipif(not compiled.available(), reason="numba is not installed (pip install numba)")


@needs_numba
@pytest.mark.parametrize("c, o, k, h, stride, direct", [
    (8, 8, 5, 24, 1, True),      # seed-deep's second conv
    (1, 8, 5, 28, 1, True),      # seed-deep's first conv
    (6, 16, 5, 14, 1, True),     # lenet5's second conv
    (1, 32, 3, 28, 1, True),     # mnist-cnn's first conv
    (32, 64, 3, 26, 1, None),    # mnist-cnn's second conv: direct where 64 channels fit (512-bit vectors)
    (64, 128, 3, 12, 1, False),  # too many channels for a register block
    (8, 8, 3, 28, 2, False),     # stride 2: the direct input gradient needs stride 1
])
def test_auto_takes_the_direct_kernels_for_few_channels(c, o, k, h, stride, direct) -> None:
    if direct is None:
        direct = direct_kernels.max_channels() >= max(c, o)
    x = np.zeros((2, c, h, h), np.float32)
    _, ctx = conv.conv2d_forward(x, np.zeros((o, c, k, k), np.float32), None, (stride, stride), (0,) * 4, (1, 1))
    assert isinstance(ctx, conv.DirectContext) is direct


@needs_numba
@pytest.mark.parametrize("c, o, kh, kw, padding, dilation, hw", [
    (8, 8, 5, 5, 0, 1, (24, 24)),   # seed-deep's second conv: two blocks of 10 pixels per row
    (1, 6, 5, 5, 2, 1, (28, 28)),   # lenet5's first conv: 6 outputs (computed as 8), padding
    (1, 3, 3, 2, 1, 2, (11, 9)),    # one input channel, 3 outputs computed as 8, dilation, a row tail
    (6, 16, 5, 5, 0, 1, (14, 14)),  # two vectors of outputs, a block of 5 pixels
    (3, 27, 3, 2, 1, 2, (9, 13)),   # a partial vector, dilation, a row tail
    (2, 1, 1, 3, 0, 1, (3, 40)),    # one output channel: a wide block
    (5, 64, 3, 3, 1, 1, (7, 30)),   # output channels in groups of whole vectors, input gradient with 64 in
    (48, 40, 2, 3, 0, 1, (5, 6)),   # groups of one vector (40 = 5 x 8) or all 40 at once (16 lanes)
    (4, 8, 3, 3, (0, 2, 1, 0), 1, (6, 7)),  # uneven padding: the input gradient pads the output gradient unevenly
    (3, 5, 1, 1, 1, 1, (4, 5)),     # padding beyond the kernel's reach: the padded gradient is cropped
    (3, 9, 3, 3, (3, 1, 0, 2), 1, (6, 6)),  # ... on one side only
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_direct_kernels_match_im2col(c, o, kh, kw, padding, dilation, hw, dtype, rng) -> None:
    """Output and all three gradients of the direct kernels agree with im2col (to rounding)."""
    with xpcnn.settings(direct_max_channels=64, direct_split_min_flops=0):  # grouped cases, split batches
        _direct_against_im2col(c, o, kh, kw, padding, dilation, hw, dtype, rng)


def _direct_against_im2col(c, o, kh, kw, padding, dilation, hw, dtype, rng) -> None:
    x = rng.standard_normal((3, c, *hw)).astype(dtype)
    weight, bias = rng.standard_normal((o, c, kh, kw)).astype(dtype), rng.standard_normal(o).astype(dtype)
    geometry = ((1, 1), padding if isinstance(padding, tuple) else (padding,) * 4, (dilation, dilation))
    results = []
    for kind in ("columns", "direct"):
        y, ctx = conv.conv2d_forward(x, weight, bias, *geometry, kind)
        assert isinstance(ctx, conv.DirectContext) is (kind == "direct")
        assert y.dtype == dtype
        grad_y = np.cos(np.arange(y.size, dtype=dtype)).reshape(y.shape)
        results.append((y, *conv2d_backward(grad_y, ctx)))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for a, b in zip(*results):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * 10)


@needs_numba
@pytest.mark.parametrize("kind", ["columns", "direct", "auto"])
@pytest.mark.parametrize("c, o, k, padding", [
    (4, 16, 3, 1),   # the kernel's sums start from the addend
    (5, 3, 3, 1),    # 3 outputs computed as 8: added afterwards
    (3, 4, 1, 1),    # padding beyond the kernel's reach: a cropped gradient, added afterwards
])
def test_conv_backward_adds_add_to(kind, c, o, k, padding, rng) -> None:
    """``conv2d_backward(..., add_to=a)`` returns the input gradient plus ``a`` (a residual block's shortcut
    gradient), on every path, and leaves ``a`` as it was."""
    x = rng.standard_normal((3, c, 6, 7)).astype(np.float32)
    weight = rng.standard_normal((o, c, k, k)).astype(np.float32)
    geometry = ((1, 1), (padding,) * 4, (1, 1))
    y, ctx = conv.conv2d_forward(x, weight, None, *geometry, kind)
    grad_y = rng.standard_normal(y.shape).astype(np.float32)
    addend = rng.standard_normal(x.shape).astype(np.float32)
    kept = addend.copy()
    plain, _, _ = conv2d_backward(grad_y, ctx)
    summed, _, _ = conv2d_backward(grad_y, ctx, True, addend)
    np.testing.assert_allclose(summed, plain + kept, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(addend, kept)


@needs_numba
def test_direct_kernels_take_a_gradient_of_another_dtype(rng) -> None:
    """A float64 output gradient into a float32 conv computes in float32, like the rest of the step."""
    x, weight = rng.standard_normal((2, 3, 8, 8)).astype(np.float32), rng.standard_normal((4, 3, 3, 3))
    y, ctx = conv.conv2d_forward(x, weight, None, (1, 1), (0,) * 4, (1, 1), "direct")
    assert y.dtype == np.float32
    grad_x, grad_w, _ = conv2d_backward(np.ones(y.shape), ctx)
    _, ref = conv.conv2d_forward(x, weight.astype(np.float32), None, (1, 1), (0,) * 4, (1, 1), "columns")
    _, ref_w, _ = conv2d_backward(np.ones(y.shape, np.float32), ref)
    np.testing.assert_allclose(grad_w, ref_w, rtol=1e-4, atol=1e-4)
    assert np.all(np.isfinite(grad_x))
