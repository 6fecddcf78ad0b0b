"""A ReLU followed by a max-pool runs as one step: the same values and gradients as the two layers apart."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn import layers as L
from xpcnn.model import Sequential
from xpcnn.ops.activations import relu_backward, relu_forward
from xpcnn.ops.pool import max_pool2d_backward, max_pool2d_forward


def _awkward_input(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values from a few levels, so windows have ties, zeros, and all-negative windows."""
    x = rng.integers(-3, 3, size=shape).astype(np.float64)
    x[0, 0, :4, :4] = -1.0  # all negative: ReLU gives zeros, which must pass no gradient
    return x


@pytest.mark.parametrize("kernel, stride, padding", [
    ((2, 2), (2, 2), (0, 0, 0, 0)),  # windows tile the input (the compiled / first-max path)
    ((3, 3), (1, 1), (1, 1, 1, 1)),  # overlapping, padded windows (the general path)
    ((2, 3), (2, 1), (0, 0, 1, 1)),
])
def test_pooled_relu_matches_relu_then_pool(kernel, stride, padding, backend, rng) -> None:
    x_host = _awkward_input(rng, (3, 4, 8, 9))
    x = backend.asarray(x_host)
    r = relu_forward(x)
    expected, ctx = max_pool2d_forward(r, kernel, stride, padding)
    fused, fused_ctx = max_pool2d_forward(x, kernel, stride, padding, relu=True)
    np.testing.assert_array_equal(backend.numpy(fused), backend.numpy(expected))

    grad_y = backend.asarray(rng.standard_normal(tuple(expected.shape)))
    expected_grad = relu_backward(max_pool2d_backward(grad_y, ctx), r)
    fused_grad = max_pool2d_backward(grad_y, fused_ctx)
    np.testing.assert_array_equal(backend.numpy(fused_grad), backend.numpy(expected_grad))
    assert np.count_nonzero(backend.numpy(fused_grad)) > 0


def _net() -> list[L.Layer]:
    return [L.Conv2D(2, 4, 3, seed=1), L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Dense(4 * 3 * 3, 5, seed=2)]


def test_sequential_folds_relu_into_the_next_max_pool(rng) -> None:
    """Output and every gradient equal those of the layers run one by one (float64), and the ReLU
    is really skipped: its cache is dropped, so calling it alone afterwards asks for a forward."""
    x = rng.standard_normal((3, 2, 8, 8))
    grad_out = rng.standard_normal((3, 5))
    model = Sequential(_net()).to(dtype="float64")
    apart = Sequential(_net()).to(dtype="float64")

    y = model.forward(x)
    assert model._folded_relus == {1}
    grad_x = model.backward(grad_out, need_input_grad=True)

    h = x
    for layer in apart.layers:
        h = layer.forward(h)
    g = grad_out
    for layer in reversed(apart.layers):
        g = layer.backward(g)

    np.testing.assert_allclose(y, h, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(grad_x, g, rtol=1e-13, atol=1e-13)
    for mine, theirs in zip(model.layers, apart.layers):
        for name in mine.grads:
            np.testing.assert_allclose(mine.grads[name], theirs.grads[name], rtol=1e-13, atol=1e-13)
    with pytest.raises(RuntimeError, match="run forward first"):
        model.layers[1].backward(grad_out)


def test_only_a_relu_directly_before_a_max_pool_is_folded(rng) -> None:
    layers = [L.ReLU(), L.AvgPool2D(2), L.LeakyReLU(), L.MaxPool2D(2), L.ReLU(), L.MaxPool2D(1)]
    model = Sequential(layers).to(dtype="float64")
    model.forward(rng.standard_normal((1, 1, 8, 8)))
    assert model._folded_relus == {4}
