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


# -- residual networks (issue 19) ------------------------------------------------------------------------------
SHAPED = [("resnet20", 3, 32), ("resnet20", 1, 28), ("fastnet", 3, 32), ("fastnet", 1, 28)]


def _twin_of(model: xpcnn.Sequential) -> torch.nn.Sequential:
    """The torch twin, loaded with every parameter and buffer of ``model`` (only num_batches_tracked is its own)."""
    from xpcnn.backend.torch_reference import build_torch_model
    twin = build_torch_model(model.config())
    result = twin.load_state_dict({k: torch.tensor(B.to_numpy(v)) for k, v in model.state_dict().items()},
                                  strict=False)
    assert not result.unexpected_keys and all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    return twin


@pytest.mark.parametrize("name, channels, size", SHAPED, ids=[f"{n}-{c}x{s}" for n, c, s in SHAPED])
def test_shaped_preset_state_dict_loads_into_its_torch_twin_with_the_same_outputs(name, channels, size) -> None:
    """Loss, every gradient and the running statistics in float64 (20 layers of float32 batch norm over a batch
    of 4 round to about 1e-3 in the first layer's gradient, in PyTorch as here), outputs in float32."""
    model = xpcnn.models.build(name, seed=1, in_channels=channels, image_size=size, num_classes=7)
    twin = _twin_of(model)
    ours = [k for k in model.state_dict()]
    theirs = [k for k in twin.state_dict() if not k.endswith("num_batches_tracked")]
    assert ours == theirs, "same keys in the same order"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, channels, size, size)).astype(np.float32)
    model.eval(), twin.eval()
    np.testing.assert_allclose(model.forward(x), twin(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    model.train().to("cpu", dtype="float64"), twin.train().double()
    x = x.astype(np.float64)
    labels = rng.integers(0, 7, 4)
    loss = SoftmaxCrossEntropy(label_smoothing=0.1)
    value = float(loss.forward(model.forward(x), labels))  # training mode: batch statistics
    model.backward(loss.backward())
    ref = torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(labels), label_smoothing=0.1)
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-10)
    torch_grads = dict(twin.named_parameters())
    for key, layer, pname in model.named_parameters():
        ours_g, theirs_g = layer.grads[pname], torch_grads[key].grad.numpy()
        assert np.max(np.abs(ours_g - theirs_g)) <= 1e-9 * np.max(np.abs(theirs_g)) + 1e-12, key
    for key, value in twin.state_dict().items():  # the running statistics moved the same way
        if "running" in key:
            np.testing.assert_allclose(model.state_dict()[key], value.numpy(), rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name", ["resnet20", "fastnet"])
def test_shaped_presets_match_torch_on_every_backend(name, backend) -> None:
    model = xpcnn.models.build(name, in_channels=3, image_size=8)
    twin = _twin_of(model).eval()
    model = model.to(backend.placement.device, backend.placement.backend).eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(backend.numpy(model.forward(backend.asarray(x))),
                               twin(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert all(not layer.training for layer in model.modules()), "eval() reaches the nested layers"
    model.train()
    assert all(layer.training for layer in model.modules())
    assert all(layer.placement == model.placement for layer in model.modules()), "to() reaches the nested layers"


def test_resnet20_is_he_et_al_with_option_b_shortcuts() -> None:
    model = xpcnn.models.build("resnet20")
    assert model.num_parameters() == 272_474  # 269,722 without the two projection shortcuts (option A)
    residuals = [layer for layer in model.layers if isinstance(layer, xpcnn.layers.Residual)]
    assert len(residuals) == 9 and sum(bool(r.shortcut) for r in residuals) == 2
    keys = model.state_dict()
    assert "3.block.0.weight" in keys and "9.shortcut.0.weight" in keys and "15.shortcut.1.running_var" in keys
    assert model.output_shape((5, 3, 32, 32)) == (5, 10)
    assert xpcnn.models.build("resnet20", num_classes=100).output_shape((1, 3, 33, 33)) == (1, 100)


def test_preset_shape_errors_are_one_clear_line() -> None:
    with pytest.raises(ValueError, match=r"fastnet pools twice by 2: its image_size must be divisible by 4, got 30x30"):
        xpcnn.models.build("fastnet", image_size=30)
    with pytest.raises(ValueError, match=r"seed-deep is built for 1x28x28 images and 10 classes, got in_channels=3"):
        xpcnn.models.build("seed-deep", in_channels=3)
    with pytest.raises(ValueError, match=r"resnet20: num_classes must be a positive int, got 0"):
        xpcnn.models.build("resnet20", num_classes=0)
    assert xpcnn.models.build("seed-deep", in_channels=1, image_size=28).name == "seed-deep"


def test_residual_model_config_round_trips_and_summarizes(tmp_path) -> None:
    model = xpcnn.models.build("resnet20", seed=2, in_channels=1, image_size=28)
    rebuilt = xpcnn.Sequential.from_config(model.config())
    assert rebuilt.config() == model.config()
    path = model.save(tmp_path / "resnet.npz")
    loaded = xpcnn.load(path)
    assert loaded.config() == model.config()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(B.to_numpy(loaded.state_dict()[key]), B.to_numpy(value))
    summary = model.summary((1, 28, 28))
    assert "Residual(shortcut=Conv2D+BatchNorm2D)" in summary and "  15.shortcut.0" in summary
    assert "total parameters: 272,186" in summary


def test_residual_refuses_paths_of_different_shapes() -> None:
    from xpcnn.errors import ShapeError
    layer = xpcnn.layers.Residual([xpcnn.layers.Conv2D(2, 4, 3, padding=1)])
    with pytest.raises(ShapeError, match=r"the block maps \(1, 2, 5, 5\) to \(1, 4, 5, 5\) but the shortcut to "
                                         r"\(1, 2, 5, 5\); make the shortcut match"):
        xpcnn.Sequential([layer]).forward(np.zeros((1, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="block must hold at least one layer"):
        xpcnn.layers.Residual([])
    with pytest.raises(TypeError, match=r"block\[1\] is a str, not an xpcnn layer"):
        xpcnn.layers.Residual([xpcnn.layers.ReLU(), "relu"])


def test_global_avg_pool_alias_is_pytorch_adaptive_avg_pool_of_one() -> None:
    assert isinstance(xpcnn.layers.AdaptiveAvgPool2d(1), xpcnn.layers.GlobalAvgPool2D)
    assert isinstance(xpcnn.layers.AdaptiveAvgPool2d((1, 1)), xpcnn.layers.GlobalAvgPool2D)
    with pytest.raises(ValueError, match="supports output_size=1 only"):
        xpcnn.layers.AdaptiveAvgPool2d(2)


@pytest.mark.parametrize("name", ["resnet20", "fastnet"])
def test_a_shaped_preset_trains_and_its_loss_falls(name) -> None:
    """Smoke test: a few Nesterov SGD steps with label smoothing on one small batch lower the loss."""
    model = xpcnn.models.build(name, seed=0, in_channels=3, image_size=8)
    optimizer = xpcnn.optim.SGD(model, lr=0.05, momentum=0.9, nesterov=True)
    loss = SoftmaxCrossEntropy(label_smoothing=0.1)
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((16, 3, 8, 8)).astype(np.float32), rng.integers(0, 10, 16)
    values = []
    for _ in range(6):
        values.append(float(loss.forward(model.forward(x), labels)))
        model.backward(loss.backward(), need_input_grad=False)
        optimizer.step()
    assert values[-1] < values[0] - 0.2, values


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_cycle_follows_torch_step_by_step(optimizer) -> None:
    """Rate and momentum (SGD's momentum, Adam's first beta) of every step, as torch's OneCycleLR."""
    model, twin = xpcnn.models.build("seed-simple"), torch.nn.Linear(2, 2)
    if optimizer == "sgd":
        opt, topt = xpcnn.optim.SGD(model, lr=0.4, momentum=0.9), torch.optim.SGD(twin.parameters(), lr=0.4,
                                                                                 momentum=0.9)
    else:
        opt, topt = xpcnn.optim.Adam(model, lr=0.01), torch.optim.Adam(twin.parameters(), lr=0.01)
    ours = xpcnn.optim.OneCycleLR(opt, total_steps=23, pct_start=0.25)
    theirs = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=topt.param_groups[0]["lr"], total_steps=23,
                                                 pct_start=0.25)
    for _ in range(23):
        group = topt.param_groups[0]
        assert opt.lr == pytest.approx(group["lr"], rel=1e-12)
        assert (opt.momentum if optimizer == "sgd" else opt.betas[0]) == pytest.approx(
            group["momentum"] if optimizer == "sgd" else group["betas"][0], rel=1e-12)
        topt.step()
        theirs.step()
        ours.step()


def test_warmup_cosine_follows_torch_linear_then_cosine() -> None:
    model, twin = xpcnn.models.build("seed-simple"), torch.nn.Linear(2, 2)
    opt, topt = xpcnn.optim.SGD(model, lr=0.2), torch.optim.SGD(twin.parameters(), lr=0.2)
    ours = xpcnn.optim.WarmupCosineLR(opt, warmup_steps=5, total_steps=17, eta_min=0.001)
    lr_sched = torch.optim.lr_scheduler
    theirs = lr_sched.SequentialLR(topt, [lr_sched.LinearLR(topt, start_factor=0.1, total_iters=5),
                                          lr_sched.CosineAnnealingLR(topt, T_max=12, eta_min=0.001)], milestones=[5])
    for _ in range(17):
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-9)
        topt.step()
        theirs.step()
        ours.step()
    assert opt.lr == pytest.approx(0.001)


def test_per_batch_schedules_refuse_bad_arguments() -> None:
    opt = xpcnn.optim.SGD(xpcnn.models.build("seed-simple"), lr=0.1)
    with pytest.raises(ValueError, match=r"warmup_steps \(10\) must be below total_steps \(10\)"):
        xpcnn.optim.WarmupCosineLR(opt, warmup_steps=10, total_steps=10)
    with pytest.raises(ValueError, match=r"OneCycleLR: Invalid pct_start: 1.0"):
        xpcnn.optim.OneCycleLR(opt, total_steps=10, pct_start=1.0)
    with pytest.raises(ValueError, match=r"OneCycleLR: total_steps must be an int >= 1, got 0"):
        xpcnn.optim.OneCycleLR(opt, total_steps=0)
