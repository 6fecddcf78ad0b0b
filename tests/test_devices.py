"""Device specs, clear errors, and moves between backends and devices."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import backend as B
from xpcnn.errors import BackendMismatchError, BackendUnavailableError, DeviceUnavailableError
from xpcnn.losses import SoftmaxCrossEntropy


def test_cpu_defaults_to_numpy() -> None:
    p = B.resolve("cpu")
    assert p.backend == "numpy" and p.kind == "cpu"


@pytest.mark.parametrize("spec, backend, message", [
    ("tpu", None, "unknown device 'tpu'"),
    ("cuda", "numpy", "numpy runs on the CPU only"),
    ("cpu", "cupy", "cupy runs on CUDA GPUs only"),
    ("cpu", "tensorflow", "unknown backend 'tensorflow'"),
    ("cuda", "array_api_strict", "no CUDA devices"),
])
def test_bad_device_specs_are_named(spec, backend, message) -> None:
    with pytest.raises((DeviceUnavailableError, BackendUnavailableError), match=message):
        B.resolve(spec, backend)


def test_cuda_without_gpu_says_so() -> None:
    try:
        B.resolve("cuda")
    except DeviceUnavailableError as exc:
        assert "cupy is not installed" in str(exc) or "no CUDA device" in str(exc)
    else:
        pytest.skip("a CUDA device is present here")


def test_cuda_index_out_of_range() -> None:
    pytest.importorskip("torch")
    with pytest.raises(DeviceUnavailableError, match="no CUDA device|does not exist"):
        B.resolve("cuda:99", "torch")


@pytest.mark.parametrize("name", ["seed-simple", "seed-deep", "mnist-cnn", "lenet5"])
def test_presets_stay_on_array_api_strict_device1(name) -> None:
    """Nothing falls back to the default device: every output and gradient stays on device1."""
    strict = pytest.importorskip("array_api_strict")
    device1 = strict.Device("device1")
    model = xpcnn.models.build(name).to("device1")
    x = B.from_numpy(np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32),
                     model.placement)
    labels = strict.asarray(np.array([0, 1, 2, 3]), device=device1)
    loss = SoftmaxCrossEntropy()
    out = model.forward(x)
    assert out.device == device1
    assert loss.forward(out, labels).device == device1
    model.backward(loss.backward())
    for layer in model.layers:
        for v in list(layer.params.values()) + list(layer.grads.values()):
            assert v.device == device1
    opt = xpcnn.optim.Adam(model)
    opt.step()
    assert all(p.device == device1 for p in model.parameters())


def test_mixed_backends_are_refused() -> None:
    torch = pytest.importorskip("torch")
    model = xpcnn.models.build("seed-simple")
    with pytest.raises(BackendMismatchError, match="layer 0 .*different backends.*model.to"):
        model.forward(torch.zeros((1, 1, 28, 28)))


def test_mixed_devices_are_refused() -> None:
    strict = pytest.importorskip("array_api_strict")
    model = xpcnn.models.build("seed-simple").to("device1")
    x = strict.zeros((1, 1, 28, 28), device=strict.Device("device2"))
    with pytest.raises(BackendMismatchError, match="different devices"):
        model.forward(x)


@pytest.mark.parametrize("backend", ["torch", "jax", "array_api_strict"])
def test_move_round_trip_keeps_values(backend) -> None:
    pytest.importorskip(backend)
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    moved = B.move(host, B.resolve("cpu", backend))
    assert B.backend_name(B.namespace_of(moved)) == backend
    np.testing.assert_array_equal(B.to_numpy(moved), host)
