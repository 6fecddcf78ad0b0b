"""Presets, state dicts, optimizers and a real learning step, checked against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import backend as B
from xpcnn.errors import CheckpointError
from xpcnn.losses import SoftmaxCrossEntropy

torch = pytest.importorskip("torch", reason="PyTorch is the oracle for these tests")
PRESETS = ["seed-simple", "seed-deep", "mnist-cnn", "lenet5"]


def torch_twin(model: xpcnn.Sequential) -> torch.nn.Sequential:
    """The same architecture in PyTorch, loaded with the model's weights."""
    from xpcnn.backend.torch_reference import build_torch_model
    twin = build_torch_model(model.config())
    twin.load_state_dict({k: torch.tensor(B.to_numpy(v)) for k, v in model.state_dict().items()}, strict=False)
    return twin


@pytest.mark.parametrize("name", PRESETS)
def test_same_seed_same_weights_on_every_backend(name, backend) -> None:
    reference = {k: B.to_numpy(v) for k, v in xpcnn.models.build(name, seed=3).state_dict().items()}
    moved = xpcnn.models.build(name, seed=3).to(backend.placement.device, backend.placement.backend)
    for key, value in moved.state_dict().items():
        np.testing.assert_array_equal(backend.numpy(value), reference[key])
    other = xpcnn.models.build(name, seed=4).state_dict()
    assert not np.array_equal(B.to_numpy(other["0.weight"]), reference["0.weight"])


@pytest.mark.parametrize("name", PRESETS)
def test_preset_matches_torch_forward_and_gradients(name, backend) -> None:
    model = xpcnn.models.build(name).to(backend.placement.device, backend.placement.backend).eval()
    twin = torch_twin(xpcnn.models.build(name)).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    loss = SoftmaxCrossEntropy()
    value = float(loss.forward(model.forward(backend.asarray(x)), backend.asarray(labels)))
    model.backward(loss.backward())
    ref = torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(labels))
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-5)
    for key, layer, pname in model.named_parameters():
        ours = backend.numpy(layer.grads[pname])
        theirs = dict(twin.named_parameters())[key].grad.numpy()
        assert np.max(np.abs(ours - theirs)) <= 1e-5 * np.max(np.abs(theirs)) + 1e-7, key


def test_state_dict_round_trips_through_torch() -> None:
    model = xpcnn.models.build("mnist-cnn", seed=1)
    twin = torch_twin(model)
    fresh = xpcnn.models.build("mnist-cnn", seed=2)
    fresh.load_state_dict(twin.state_dict())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(B.to_numpy(fresh.state_dict()[key]), B.to_numpy(value))


def test_wrong_architecture_names_the_tensors() -> None:
    with pytest.raises(CheckpointError, match=r"missing .*0\.bias.*shape mismatch 0\.weight"):
        xpcnn.models.build("seed-deep").load_state_dict(xpcnn.models.build("seed-simple").state_dict())


@pytest.mark.parametrize("make_ours, make_theirs", [
    (lambda m: xpcnn.optim.SGD(m, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda m: xpcnn.optim.SGD(m, lr=0.05, momentum=0.9, weight_decay=1e-3),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3)),
    (lambda m: xpcnn.optim.SGD(m, lr=0.05, momentum=0.9, nesterov=True),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    (lambda m: xpcnn.optim.Adam(m, lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
    (lambda m: xpcnn.optim.Adam(m, lr=1e-2, weight_decay=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2)),
    (lambda m: xpcnn.optim.AdamW(m, lr=1e-2), lambda p: torch.optim.AdamW(p, lr=1e-2)),
], ids=["sgd", "sgd-momentum-wd", "sgd-nesterov", "adam", "adam-l2", "adamw"])
def test_optimizer_steps_match_torch(make_ours, make_theirs) -> None:
    model = xpcnn.models.build("seed-deep").to("cpu", dtype="float64")
    twin = torch_twin(xpcnn.models.build("seed-deep")).double()
    ours, theirs = make_ours(model), make_theirs(twin.parameters())
    rng = np.random.default_rng(0)
    loss = SoftmaxCrossEntropy()
    for _ in range(4):
        x = rng.standard_normal((6, 1, 28, 28))
        labels = rng.integers(0, 10, 6)
        loss.forward(model.forward(x), labels)
        model.backward(loss.backward())
        ours.step()
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(labels)).backward()
        theirs.step()
    for key, value in twin.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[key], value.numpy(), rtol=1e-9, atol=1e-11, err_msg=key)


def test_schedules_follow_torch() -> None:
    model = xpcnn.models.build("seed-simple")
    twin = torch.nn.Linear(2, 2)
    for ours_cls, theirs_cls, kwargs, tkwargs in [
            (xpcnn.optim.StepLR, torch.optim.lr_scheduler.StepLR, {"step_size": 2, "gamma": 0.5},
             {"step_size": 2, "gamma": 0.5}),
            (xpcnn.optim.CosineAnnealingLR, torch.optim.lr_scheduler.CosineAnnealingLR, {"t_max": 5}, {"T_max": 5})]:
        opt, topt = xpcnn.optim.SGD(model, lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
        ours, theirs = ours_cls(opt, **kwargs), theirs_cls(topt, **tkwargs)
        for _ in range(5):
            topt.step()
            ours.step(), theirs.step()
            assert opt.lr == pytest.approx(topt.param_groups[0]["lr"])


def test_batchnorm_running_stats_match_torch() -> None:
    layer = xpcnn.layers.BatchNorm2D(3)
    ref = torch.nn.BatchNorm2d(3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32) * 2 + 1
        layer.forward(x)
        ref(torch.tensor(x))
    np.testing.assert_allclose(layer.buffers["running_mean"], ref.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(layer.buffers["running_var"], ref.running_var.numpy(), rtol=1e-5)
    layer.training, ref.training = False, False
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(layer.forward(x), ref(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_dropout_trains_and_evals() -> None:
    layer = xpcnn.layers.Dropout(0.5, seed=1)
    x = np.ones((200, 50), np.float32)
    y = layer.forward(x)
    kept = y != 0
    assert 0.4 < kept.mean() < 0.6 and np.allclose(y[kept], 2.0)
    np.testing.assert_array_equal(layer.backward(x) != 0, kept)
    layer.training = False
    np.testing.assert_array_equal(layer.forward(x), x)


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_dropout_keeps_one_minus_p_and_repeats_its_draws(p, backend) -> None:
    """Every backend keeps a fraction 1 - p (NumPy draws 16-bit integers) and the same (seed, draw) repeats."""
    x = backend.asarray(np.ones((64, 4, 16, 16), np.float32))
    first, again = xpcnn.layers.Dropout(p, seed=5), xpcnn.layers.Dropout(p, seed=5)
    y = backend.numpy(first.forward(x))
    kept = (y != 0).mean()
    assert abs(kept - (1 - p)) < 4 * np.sqrt(p * (1 - p) / y.size), kept
    np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-6)
    np.testing.assert_array_equal(backend.numpy(again.forward(x)), y)
    assert (backend.numpy(first.forward(x)) != y).any(), "the next draw differs"


def test_a_few_steps_reduce_the_loss(backend) -> None:
    model = xpcnn.models.build("seed-deep").to(backend.placement.device, backend.placement.backend)
    opt = xpcnn.optim.Adam(model, lr=3e-3)
    loss = SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.standard_normal((16, 1, 28, 28)).astype(np.float32))
    labels = backend.asarray(rng.integers(0, 10, 16))
    first = None
    for _ in range(15):
        value = float(loss.forward(model.forward(x), labels))
        first = value if first is None else first
        model.backward(loss.backward())
        opt.step()
    assert value < 0.5 * first


@pytest.mark.parametrize("first", ["conv", "dense", "pool"])
def test_backward_returns_the_input_gradient_whatever_the_first_layer(first, rng) -> None:
    """The layer protocol at the top: Sequential.backward returns dL/d_input (like every layer), unless a
    trainer asks the first layer to skip it; no flag outlives its call, not even after an exception."""
    from xpcnn import layers as L
    head = {"conv": [L.Conv2D(1, 2, 3, seed=1), L.Flatten(), L.Dense(2 * 4 * 4, 3, seed=2)],
            "dense": [L.Flatten(), L.Dense(36, 3, seed=2)],
            "pool": [L.MaxPool2D(2), L.Flatten(), L.Dense(9, 3, seed=2)]}[first]
    if first == "dense":
        head = head[1:]
    model = xpcnn.Sequential(head)
    x = rng.standard_normal((2, 36) if first == "dense" else (2, 1, 6, 6)).astype(np.float32)
    grad_out = np.ones((2, 3), np.float32)
    model.forward(x)
    assert model.backward(grad_out).shape == x.shape
    skipped = model.backward(grad_out, need_input_grad=False)
    assert skipped is None or skipped.shape == x.shape  # a pool has no cheaper path, and may return it
    with pytest.raises(ValueError):
        model.backward(np.ones((2, 4), np.float32))  # wrong shape: fails inside the backward pass
    model.forward(x)
    assert model.backward(grad_out).shape == x.shape
