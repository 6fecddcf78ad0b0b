"""Forward and backward of every layer against PyTorch autograd in float32, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from layer_cases import ALL_CASES, Case, parameters_of
from test_gradients import put_layer

from xpcnn import layers as L
from xpcnn.errors import DTypeError
from xpcnn.losses import SoftmaxCrossEntropy

torch = pytest.importorskip("torch", reason="PyTorch is the oracle for these tests")

TOL = 1e-5


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-30))


def torch_reference(case: Case, params: dict[str, np.ndarray], x: np.ndarray, grad_y: np.ndarray):
    tx = torch.tensor(x, requires_grad=True)
    tparams = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params.items()}
    ty = case.torch_fn(tx, **tparams)
    ty.backward(torch.tensor(grad_y))
    return ty.detach().numpy(), tx.grad.numpy(), {k: p.grad.numpy() for k, p in tparams.items()}


def check_against_torch(case: Case, backend, x: np.ndarray, rng: np.random.Generator) -> None:
    layer = case.make()
    slots = parameters_of(layer)
    host_params = {key: np.asarray(owner.params[name], dtype=np.float32) for key, owner, name in slots}
    put_layer(layer, backend, np.float32)
    y = layer.forward(backend.asarray(x))
    grad_y = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    grad_x = layer.backward(backend.asarray(grad_y))
    ref_y, ref_gx, ref_grads = torch_reference(case, host_params, x, grad_y)
    ours_grads = {key: owner.grads[name] for key, owner, name in slots}
    assert str(y.dtype).endswith("float32")
    assert rel_err(backend.numpy(y), ref_y) <= TOL, "forward"
    assert rel_err(backend.numpy(grad_x), ref_gx) <= TOL, "input gradient"
    for name, ref in ref_grads.items():
        ours = backend.numpy(ours_grads[name])
        if name.endswith("bias") and len(grad_y.shape) == 4:
            # A sum over N*Ho*Wo values that may cancel: beside the relative tolerance, allow float32's
            # rounding of that sum, (log2(count) + 1) * eps * sum|terms| (PyTorch and BLAS sum in other orders).
            terms = np.abs(grad_y.astype(np.float64)).sum(axis=(0, 2, 3))
            bound = (np.log2(grad_y.size / grad_y.shape[1]) + 1) * np.finfo(np.float32).eps * terms
            assert np.all(np.abs(ours - ref) <= TOL * np.max(np.abs(ref)) + bound), name
            continue
        assert rel_err(ours, ref) <= TOL, name


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_layer_matches_torch(case: Case, backend, rng) -> None:
    if reason := case.skip_reason(backend.name):
        pytest.skip(reason)
    x = (rng.standard_normal(case.input_shape) * case.scale).astype(np.float32)
    check_against_torch(case, backend, x, rng)


def test_batch_norm_sums_a_large_batch_as_exactly_as_torch(backend, rng) -> None:
    """BatchNorm2D's per-channel sums over N*H*W = 100,352 float32 values (batch 128 of 28x28, channel-last in
    memory as a convolution leaves them) are within a few float32 roundings of PyTorch's float64 result,
    relative to the terms' 2-norm, as PyTorch's own float32 batch norm is (it accumulates in float64 on the
    CPU). grad_y's per-channel means are 0, so the gradients' sums cancel: a float32 sum, one by one as NumPy
    adds along strided axes, or by a product with ones, was 5 to 30 times further off."""
    shape = (128, 4, 28, 28)
    x = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    g = rng.standard_normal(shape)
    grad_y = np.ascontiguousarray((g - g.mean(axis=(0, 2, 3), keepdims=True)).astype(np.float32).transpose(
        0, 2, 3, 1)).transpose(0, 3, 1, 2)
    layer = L.BatchNorm2D(4)
    put_layer(layer, backend, np.float32)
    y = backend.numpy(layer.forward(backend.asarray(x)))
    layer.backward(backend.asarray(grad_y))
    bn = torch.nn.BatchNorm2d(4).double().train()
    ty = bn(torch.tensor(x, dtype=torch.float64))
    ty.backward(torch.tensor(grad_y, dtype=torch.float64))
    x_hat = (ty.detach().numpy() - bn.bias.detach().numpy()[:, None, None]) / bn.weight.detach().numpy()[:, None, None]
    eps = np.finfo(np.float32).eps
    for name, terms in (("bias", grad_y.astype(np.float64)), ("weight", grad_y * x_hat)):
        bound = 4 * eps * np.sqrt((terms ** 2).sum(axis=(0, 2, 3)))
        error = np.abs(backend.numpy(layer.grads[name]) - getattr(bn, name).grad.numpy())
        assert np.all(error <= bound), f"{name}: {error} above {bound}"
    assert np.max(np.abs(y - ty.detach().numpy())) <= 1e-5 * np.max(np.abs(y)), "forward"
    assert np.allclose(backend.numpy(layer.buffers["running_var"]), bn.running_var.numpy(), rtol=1e-6)


def test_maxpool_tie_goes_to_first_maximum(backend) -> None:
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)  # every window is a four-way tie
    case = Case("ties", lambda: L.MaxPool2D(2), lambda t: torch.nn.functional.max_pool2d(t, 2), x.shape)
    check_against_torch(case, backend, x, np.random.default_rng(0))
    x = np.zeros((1, 1, 5, 5), dtype=np.float32)  # overlapping windows, stride 1
    case = Case("ties-overlap", lambda: L.MaxPool2D(3, 1), lambda t: torch.nn.functional.max_pool2d(t, 3, 1),
                x.shape)
    check_against_torch(case, backend, x, np.random.default_rng(0))


def test_cross_entropy_matches_torch(backend, rng) -> None:
    logits = (rng.standard_normal((16, 10)) * 4).astype(np.float32)
    labels = rng.integers(0, 10, 16)
    loss = SoftmaxCrossEntropy()
    value = float(loss.forward(backend.asarray(logits), backend.asarray(labels)))
    grad = backend.numpy(loss.backward())
    t = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(t, torch.tensor(labels))
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=TOL)
    assert rel_err(grad, t.grad.numpy()) <= TOL


@pytest.mark.parametrize("labels", [[0, 1, 2], [1, 0, 2]], ids=["finite-targets", "a-minus-inf-target"])
def test_cross_entropy_matches_torch_with_minus_inf_logits(labels, backend) -> None:
    """A -inf logit (a masked class) gives PyTorch's loss and gradient, not NaN (0 * -inf in a one-hot sum);
    a -inf logit at the label gives PyTorch's inf."""
    logits = np.array([[2.0, -np.inf, 0.5], [-np.inf, 1.0, -np.inf], [0.0, -np.inf, 3.0]], dtype=np.float32)
    loss = SoftmaxCrossEntropy()
    value = float(loss.forward(backend.asarray(logits), backend.asarray(np.array(labels))))
    t = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(t, torch.tensor(labels))
    if labels[0] == 0:
        ref.backward()
        assert value == pytest.approx(ref.item(), rel=TOL)
        assert value == pytest.approx((0.2014133 + 0.0 + 0.0485873) / 3, rel=TOL)
        np.testing.assert_allclose(backend.numpy(loss.backward()), t.grad.numpy(), rtol=TOL, atol=1e-7)
    else:
        assert value == ref.item() == math.inf


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_cross_entropy_refuses_integer_logits_as_torch_does(dtype, backend) -> None:
    logits = np.array([[2, 0, 250]], dtype=dtype)  # uint8 would wrap in the row-max subtraction
    with pytest.raises(DTypeError, match=rf"expected floating-point logits, got dtype \S*{np.dtype(dtype).name}; "
                                         r"cast them with astype\(float32\)"):
        SoftmaxCrossEntropy().forward(backend.asarray(logits), backend.asarray(np.array([0])))
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.nn.functional.cross_entropy(torch.tensor(logits.astype(np.int64)), torch.tensor([0]))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), cin=st.integers(1, 4), cout=st.integers(1, 4), h=st.integers(1, 10),
       w=st.integers(1, 10), kh=st.integers(1, 4), kw=st.integers(1, 4), stride=st.integers(1, 3),
       pad=st.integers(0, 2), dil=st.integers(1, 2), bias=st.booleans(), seed=st.integers(0, 2**16),
       lowering=st.sampled_from(["columns", "rows", "tiles", "direct"]))
def test_conv_random_shapes_match_torch(n, cin, cout, h, w, kh, kw, stride, pad, dil, bias, seed, lowering) -> None:
    """Property test: any fitting conv geometry agrees with PyTorch (NumPy backend)."""
    from conftest import make_backend

    import xpcnn
    from xpcnn.kernels.numpy import compiled
    assume(lowering == "columns" or xpcnn.settings.current().kernels)  # the other lowerings are NumPy kernels
    assume(lowering != "direct" or (stride == 1 and compiled.available()))  # what the direct kernels take
    if h + 2 * pad < dil * (kh - 1) + 1 or w + 2 * pad < dil * (kw - 1) + 1:
        return  # does not fit: covered by the error tests
    rng = np.random.default_rng(seed)

    def torch_fn(t, weight, bias=None):
        return torch.nn.functional.conv2d(t, weight, bias, stride=stride, padding=pad, dilation=dil)
    case = Case("prop", lambda: L.Conv2D(cin, cout, (kh, kw), stride, pad, dil, bias, seed=seed, lowering=lowering),
                torch_fn,
                (n, cin, h, w))
    check_against_torch(case, make_backend("numpy"), rng.standard_normal(case.input_shape).astype(np.float32), rng)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(2, 9), w=st.integers(2, 9),
       k=st.integers(1, 3), stride=st.integers(1, 3), pad=st.integers(0, 1), kind=st.sampled_from(["max", "avg"]),
       seed=st.integers(0, 2**16))
def test_pool_random_shapes_match_torch(n, c, h, w, k, stride, pad, kind, seed) -> None:
    """Property test: pooling over random geometries agrees with PyTorch (NumPy backend)."""
    from conftest import make_backend
    if 2 * pad > k or h + 2 * pad < k or w + 2 * pad < k:
        return
    rng = np.random.default_rng(seed)
    fn = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
    layer_type = L.MaxPool2D if kind == "max" else L.AvgPool2D
    case = Case("prop", lambda: layer_type(k, stride, pad), lambda t: fn(t, k, stride, pad), (n, c, h, w))
    check_against_torch(case, make_backend("numpy"), rng.standard_normal(case.input_shape).astype(np.float32), rng)


@pytest.mark.parametrize("smoothing", [0.1, 0.5, 1.0])
def test_label_smoothing_matches_torch(smoothing, backend, rng) -> None:
    """Loss and gradient of SoftmaxCrossEntropy(label_smoothing=eps) are PyTorch's, a -inf logit included."""
    logits = (rng.standard_normal((16, 10)) * 4).astype(np.float32)
    labels = rng.integers(0, 10, 16)
    loss = SoftmaxCrossEntropy(label_smoothing=smoothing)
    value = float(loss.forward(backend.asarray(logits), backend.asarray(labels)))
    grad = backend.numpy(loss.backward())
    t = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(t, torch.tensor(labels), label_smoothing=smoothing)
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=TOL)
    assert rel_err(grad, t.grad.numpy()) <= TOL
    logits[0, 3] = -np.inf
    ours = float(loss.forward(backend.asarray(logits), backend.asarray(labels)))
    assert ours == torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels),
                                                     label_smoothing=smoothing).item() == math.inf


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "x"])
def test_label_smoothing_out_of_range_is_refused(bad) -> None:
    with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\], got"):
        SoftmaxCrossEntropy(label_smoothing=bad)
