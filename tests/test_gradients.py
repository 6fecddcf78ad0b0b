"""Every layer's backward against central finite differences in float64, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from layer_cases import ALL_CASES, Case, parameters_of

from xpcnn.losses import SoftmaxCrossEntropy

EPS = 1e-6
DIRECTIONS = 3


def make_input(case: Case, rng: np.random.Generator) -> np.ndarray:
    """Inputs away from kinks: no value near 0 (ReLU) and no near-ties inside a pool window."""
    size = int(np.prod(case.input_shape))
    values = (rng.permutation(size) - size / 2) / size * 4.0  # distinct, spaced ~4/size apart
    values = np.where(np.abs(values) < 0.05, values + np.sign(values + 1e-9) * 0.1, values)
    return values.reshape(case.input_shape) * case.scale


def put_layer(layer, backend, dtype=np.float64):
    """``layer`` and the layers nested in it with their parameters and buffers on ``backend`` in ``dtype``."""
    for _, owner in layer.named_modules(""):
        for store in (owner.params, owner.buffers):
            for k, v in store.items():
                store[k] = backend.asarray(np.asarray(v, dtype=dtype))
        owner.placement = backend.placement
    return layer


def loss_of(layer, backend, x, weights):
    y = layer.forward(backend.asarray(x))
    return float(np.sum(backend.numpy(y) * weights))


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_backward_matches_finite_differences(case: Case, backend, rng) -> None:
    if reason := case.skip_reason(backend.name):
        pytest.skip(reason)
    layer = put_layer(case.make(), backend)
    x = make_input(case, rng)
    y = layer.forward(backend.asarray(x))
    weights = rng.standard_normal(tuple(y.shape))
    grad_x = backend.numpy(layer.backward(backend.asarray(weights)))
    slots = parameters_of(layer)
    assert all(name in owner.grads for _, owner, name in slots), "every parameter gets a gradient"
    grads = {key: backend.numpy(owner.grads[name]) for key, owner, name in slots}

    for _ in range(DIRECTIONS):
        v = rng.standard_normal(x.shape)
        fd = (loss_of(layer, backend, x + EPS * v, weights) - loss_of(layer, backend, x - EPS * v, weights)) / (2 * EPS)
        analytic = float(np.sum(grad_x * v))
        assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-8), "input gradient"
        for key, owner, name in slots:
            base = backend.numpy(owner.params[name]).copy()
            d = rng.standard_normal(base.shape)
            owner.params[name] = backend.asarray(base + EPS * d)
            plus = loss_of(layer, backend, x, weights)
            owner.params[name] = backend.asarray(base - EPS * d)
            minus = loss_of(layer, backend, x, weights)
            owner.params[name] = backend.asarray(base)
            fd_p = (plus - minus) / (2 * EPS)
            assert float(np.sum(grads[key] * d)) == pytest.approx(fd_p, rel=1e-6, abs=1e-8), key


def test_full_elementwise_finite_differences_conv(rng) -> None:
    """One small conv checked coordinate by coordinate (not just along random directions)."""
    from conftest import make_backend
    from layer_cases import CONV_CASES
    backend = make_backend("numpy")
    case = CONV_CASES[4]  # stride (2, 1), padding 1
    layer = put_layer(case.make(), backend)
    x = make_input(case, rng)
    y = layer.forward(x)
    weights = rng.standard_normal(y.shape)
    grad_x = layer.backward(weights)
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp_, xm = x.copy(), x.copy()
        xp_[idx] += EPS
        xm[idx] -= EPS
        fd[idx] = (loss_of(layer, backend, xp_, weights) - loss_of(layer, backend, xm, weights)) / (2 * EPS)
    np.testing.assert_allclose(grad_x, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_matches_finite_differences(backend, rng, label_smoothing) -> None:
    logits = rng.standard_normal((6, 5)) * 3
    labels = backend.asarray(rng.integers(0, 5, 6))
    loss = SoftmaxCrossEntropy(label_smoothing=label_smoothing)
    loss.forward(backend.asarray(logits), labels)
    grad = backend.numpy(loss.backward())
    for _ in range(DIRECTIONS):
        v = rng.standard_normal(logits.shape)
        plus = float(loss.forward(backend.asarray(logits + EPS * v), labels))
        minus = float(loss.forward(backend.asarray(logits - EPS * v), labels))
        assert float(np.sum(grad * v)) == pytest.approx((plus - minus) / (2 * EPS), rel=1e-6)


def test_cross_entropy_is_stable_for_huge_logits(backend) -> None:
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]], dtype=np.float32)
    loss = SoftmaxCrossEntropy()
    value = float(loss.forward(backend.asarray(logits), backend.asarray(np.array([1, 1]))))
    grad = backend.numpy(loss.backward())
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert value == pytest.approx(1e4, rel=1e-6)  # sample 0 is off by 2e4, sample 1 is right: mean 1e4


def test_normal_cdf_matches_math_erfc() -> None:
    """GELU's normal CDF (rational approximations: the Array API has no erf) is float64-exact: absolute error
    at most 2.3e-16 everywhere, relative error below 1e-14 for x >= -5 and 2e-13 for x >= -20."""
    import math

    from xpcnn.ops.activations import normal_cdf
    x = np.concatenate([np.linspace(-38.0, 38.0, 40001), [0.0, 1e-300, -1e-300, math.sqrt(2), -math.sqrt(2),
                                                           8 * math.sqrt(2), -8 * math.sqrt(2)]])
    ref = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    ours = normal_cdf(x)
    assert np.max(np.abs(ours - ref)) <= 2.3e-16
    rel = np.abs(ours - ref) / ref
    assert np.max(rel[x >= -5]) < 1e-14 and np.max(rel[x >= -20]) < 2e-13
    assert normal_cdf(np.array([np.inf]))[0] == 1.0 and normal_cdf(np.array([-np.inf]))[0] == 0.0
