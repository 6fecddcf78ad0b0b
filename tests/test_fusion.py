"""An activation followed by a pooling layer runs as one step (ReLU then max-pool, tanh then average
pool): the same values and gradients as the two layers apart."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn import layers as L
from xpcnn.model import Sequential
from xpcnn.ops.activations import relu_backward, relu_forward, tanh_backward, tanh_forward
from xpcnn.ops.fused import (
    relu_max_pool2d_backward,
    relu_max_pool2d_forward,
    tanh_avg_pool2d_backward,
    tanh_avg_pool2d_forward,
)
from xpcnn.ops.pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward
from xpcnn.plan import FusedStep, ReLUFoldStep


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
    fused, fused_ctx = relu_max_pool2d_forward(x, kernel, stride, padding)
    np.testing.assert_array_equal(backend.numpy(fused), backend.numpy(expected))

    grad_y = backend.asarray(rng.standard_normal(tuple(expected.shape)))
    expected_grad = relu_backward(max_pool2d_backward(grad_y, ctx), r)
    fused_grad = relu_max_pool2d_backward(grad_y, fused_ctx)
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

    _assert_fold_matches_layers_apart(model, apart, x, grad_out, tol=1e-13)


def _assert_fold_matches_layers_apart(model: Sequential, apart: Sequential, x, grad_out, tol: float) -> None:
    """``model`` folds layer 1 into layer 2; its output, input gradient and parameter gradients equal
    those of ``apart`` (the same layers) run one by one, and the folded layer kept no cache."""
    assert [step.indices for step in model.plan if isinstance(step, FusedStep)] == [(1, 2)]
    y = model.forward(x)
    grad_x = model.backward(grad_out)

    h = x
    for layer in apart.layers:
        h = layer.forward(h)
    g = grad_out
    for layer in reversed(apart.layers):
        g = layer.backward(g)

    np.testing.assert_allclose(y, h, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad_x, g, rtol=tol, atol=tol)
    for mine, theirs in zip(model.layers, apart.layers):
        for name in mine.grads:
            np.testing.assert_allclose(mine.grads[name], theirs.grads[name], rtol=tol, atol=tol)
    with pytest.raises(RuntimeError, match="run forward first"):
        model.layers[1].backward(grad_out)


@pytest.mark.parametrize("kernel, stride, padding", [
    ((2, 2), (2, 2), (0, 0, 0, 0)),  # windows tile the input (the compiled path on NumPy)
    ((3, 3), (1, 1), (1, 1, 1, 1)),  # overlapping, padded windows (the general path)
    ((2, 3), (2, 1), (0, 0, 1, 1)),
])
def test_pooled_tanh_matches_tanh_then_pool(kernel, stride, padding, backend, rng) -> None:
    x = backend.asarray(rng.standard_normal((3, 4, 8, 9)) * 2)
    t = tanh_forward(x)
    expected, ctx = avg_pool2d_forward(t, kernel, stride, padding)
    fused, fused_ctx = tanh_avg_pool2d_forward(x, kernel, stride, padding)
    np.testing.assert_allclose(backend.numpy(fused), backend.numpy(expected), rtol=1e-13, atol=1e-15)

    grad_y = backend.asarray(rng.standard_normal(tuple(expected.shape)))
    expected_grad = tanh_backward(avg_pool2d_backward(grad_y, ctx), t)
    fused_grad = tanh_avg_pool2d_backward(grad_y, fused_ctx)
    np.testing.assert_allclose(backend.numpy(fused_grad), backend.numpy(expected_grad), rtol=1e-13, atol=1e-15)
    assert np.count_nonzero(backend.numpy(fused_grad)) > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequential_folds_tanh_into_the_next_average_pool(dtype, rng) -> None:
    """lenet5's pattern (conv, tanh, 2x2 average pool): output and gradients as the layers one by one."""
    def net() -> list[L.Layer]:
        return [L.Conv2D(1, 6, 5, padding=2, seed=1), L.Tanh(), L.AvgPool2D(2), L.Flatten(),
                L.Dense(6 * 4 * 4, 3, seed=2)]
    x = rng.standard_normal((5, 1, 8, 8)).astype(dtype)
    grad_out = rng.standard_normal((5, 3)).astype(dtype)
    model, apart = Sequential(net()).to(dtype=np.dtype(dtype).name), Sequential(net()).to(dtype=np.dtype(dtype).name)
    _assert_fold_matches_layers_apart(model, apart, x, grad_out, tol=1e-12 if dtype == np.float64 else 1e-5)


def test_only_an_activation_directly_before_its_pooling_layer_is_folded(rng) -> None:
    layers = [L.ReLU(), L.AvgPool2D(2), L.LeakyReLU(), L.MaxPool2D(2), L.ReLU(), L.MaxPool2D(1),
              L.Tanh(), L.MaxPool2D(1), L.Tanh(), L.AvgPool2D(1), L.Tanh()]
    model = Sequential(layers).to(dtype="float64")
    model.forward(rng.standard_normal((1, 1, 8, 8)))
    assert [step.indices for step in model.plan] == [(0,), (1,), (2,), (3,), (4, 5), (6,), (7,), (8, 9), (10,)]
    assert [type(step.pool).__name__ for step in model.plan if isinstance(step, FusedStep)] == ["MaxPool2D", "AvgPool2D"]


def test_the_plan_follows_changes_to_the_layer_list(rng) -> None:
    model = Sequential([L.ReLU(), L.MaxPool2D(2)])
    assert [step.indices for step in model.plan] == [(0, 1)]
    model.layers.insert(1, L.Tanh())
    assert [step.indices for step in model.plan] == [(0,), (1,), (2,)]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_runs_the_relu_after_it(training, dtype, backend, rng) -> None:
    """A BatchNorm2D followed by a ReLU runs as one step, on every backend: output, input gradient and every
    parameter gradient equal those of the layers run one by one, and the ReLU keeps no cache. Inside a residual block too (resnet20's conv-BN-ReLU-conv-BN), whose block path is planned the same
    way."""
    if backend.name == "jax" and dtype == np.float64:
        pytest.skip("JAX holds float64 only with its x64 switch")

    def net() -> list[L.Layer]:
        bn = L.BatchNorm2D(4)
        bn.params["bias"] = np.array([0.3, -0.2, 0.0, 0.1])  # some channels mostly negative: masked gradients
        block = [L.Conv2D(4, 4, 3, padding=1, bias=False, seed=3), L.BatchNorm2D(4), L.ReLU(),
                 L.Conv2D(4, 4, 3, padding=1, bias=False, seed=4), L.BatchNorm2D(4)]
        return [L.Conv2D(2, 4, 3, seed=1), bn, L.ReLU(), L.Residual(block), L.ReLU(), L.Flatten(),
                L.Dense(4 * 6 * 6, 5, seed=2)]
    name = np.dtype(dtype).name
    model = Sequential(net()).to(backend.placement.device, backend.name, dtype=name)
    apart = Sequential(net()).to(backend.placement.device, backend.name, dtype=name)
    for m in (model, apart):
        m.train() if training else m.eval()
    assert [step.indices for step in model.plan if isinstance(step, ReLUFoldStep)] == [(1, 2)]
    assert [type(step).__name__ for step in model.layers[3]._steps("block")] == ["LayerStep", "ReLUFoldStep",
                                                                                 "LayerStep", "LayerStep"]
    x = backend.asarray(rng.standard_normal((3, 2, 8, 8)).astype(dtype))
    grad_out = backend.asarray(rng.standard_normal((3, 5)).astype(dtype))
    y, grad_x = model.forward(x), model.backward(grad_out)
    h = x
    for layer in apart.layers:
        h = layer.forward(h) if not isinstance(layer, L.Residual) else _residual_apart(layer, h)
    g = grad_out
    for layer in reversed(apart.layers):
        g = layer.backward(g) if not isinstance(layer, L.Residual) else _residual_apart_backward(layer, g)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(backend.numpy(y), backend.numpy(h), rtol=tol, atol=tol)
    np.testing.assert_allclose(backend.numpy(grad_x), backend.numpy(g), rtol=tol, atol=tol)
    for (key, mine, attr), (_, theirs, _) in zip(model.named_parameters(), apart.named_parameters()):
        np.testing.assert_allclose(backend.numpy(mine.grads[attr]), backend.numpy(theirs.grads[attr]), rtol=tol,
                                   atol=tol * (1 + np.max(np.abs(backend.numpy(theirs.grads[attr])))), err_msg=key)
    assert np.count_nonzero(backend.numpy(y)) > 0
    with pytest.raises(RuntimeError, match="forward"):
        model.layers[2].backward(grad_out)


def _residual_apart(layer: L.Residual, x):
    """Residual.forward with the block's layers run one by one (no plan)."""
    h = x
    for sub in layer.block:
        h = sub.forward(h)
    return h + x


def _residual_apart_backward(layer: L.Residual, g):
    h = g
    for sub in reversed(layer.block):
        h = sub.backward(h)
    return h + g
