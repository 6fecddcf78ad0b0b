"""Device specs, clear errors, and moves between backends and devices."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import xpcnn
from xpcnn import backend as B
from xpcnn.backend import devices, libraries
from xpcnn.errors import BackendMismatchError, BackendUnavailableError, DeviceUnavailableError
from xpcnn.losses import SoftmaxCrossEntropy


def test_cpu_defaults_to_numpy() -> None:
    p = B.resolve("cpu")
    assert p.backend == "numpy" and p.kind == "cpu"


@pytest.mark.parametrize("spec, backend_choice, message", [
    ("tpu", None, "unknown device 'tpu'"),
    ("cuda", "numpy", "numpy runs on the CPU only"),
    ("cpu", "cupy", "cupy runs on CUDA GPUs only"),
    ("cpu", "tensorflow", "unknown backend 'tensorflow'"),
    ("cuda", "array_api_strict", "no CUDA devices"),
])
def test_bad_device_specs_are_named(spec, backend_choice, message) -> None:
    with pytest.raises((DeviceUnavailableError, BackendUnavailableError), match=message):
        B.resolve(spec, backend_choice)


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


@pytest.mark.parametrize("name", ["torch", "jax", "array_api_strict"])
def test_move_round_trip_keeps_values(name) -> None:
    pytest.importorskip(name)
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    moved = B.move(host, B.resolve("cpu", name))
    assert B.backend_name(B.namespace_of(moved)) == name
    np.testing.assert_array_equal(B.to_numpy(moved), host)


def test_cuda_with_torch_names_torch() -> None:
    """CUDA asked of torch on a GPU-less machine: the message is about torch and how to get it, never CuPy."""
    try:
        B.resolve("cuda", "torch")
    except DeviceUnavailableError as exc:
        message = str(exc)
    else:
        pytest.skip("torch sees a CUDA device here")
    assert "torch" in message and "cupy" not in message.lower()
    assert "no CUDA device" in message or "torch is not installed" in message
    if not B.is_available("torch") or "CPU-only build" in message:
        assert "pip install torch with CUDA support" in message and "pytorch.org" in message


@pytest.mark.parametrize("name, hint", [
    ("torch", "pip install torch with CUDA support (see pytorch.org"),
    ("cupy", "pip install 'xpcnn[cuda12]' (or [cuda13])"),
    ("jax", "pip install 'jax[cuda12]'"),
])
def test_cuda_with_a_missing_library_names_it(monkeypatch, name, hint) -> None:
    """The library missing for CUDA is the one named, with its own install command."""
    def not_installed(backend_name):
        raise BackendUnavailableError(f"backend {backend_name!r} is not installed")

    monkeypatch.setattr(devices, "namespace_for", not_installed)
    with pytest.raises(DeviceUnavailableError, match=f"but {name} is not installed") as caught:
        B.resolve("cuda", name)
    assert hint in str(caught.value)
    assert name == "cupy" or "cupy" not in str(caught.value).lower()


@pytest.mark.parametrize("name, device", [("numpy", "cpu"), ("torch", "cpu"), ("jax", "cpu"),
                                          ("array_api_strict", "cpu"), ("array_api_strict", "device1")])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool"])
def test_each_library_round_trips_an_array(name, device, dtype) -> None:
    """from_numpy then to_numpy gives the same values, shape and dtype, through every CPU library class."""
    if not B.is_available(name):
        pytest.skip(f"{name} is not installed")
    placement = B.resolve(device, name)
    lib = libraries.library(name)
    assert placement.library is lib and lib.name == name
    host = (np.arange(24).reshape(2, 3, 4) % 5).astype(dtype)
    on_device = lib.from_numpy(host, placement)
    assert B.backend_of(on_device) == name
    assert libraries.library_of(on_device) is lib
    assert B.placement_of(on_device).library is lib
    back = lib.to_numpy(on_device)
    assert isinstance(back, np.ndarray) and back.dtype == host.dtype
    np.testing.assert_array_equal(back, host)
    np.testing.assert_array_equal(B.to_numpy(B.from_numpy(host, placement)), host)


def test_library_lookup_refuses_unknown_names() -> None:
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tensorflow'"):
        libraries.library("tensorflow")


# Draws made before the per-library refactor: a resumed run must repeat its dropout masks exactly.
_PINNED_UNIFORM = {
    "numpy": [0.9007601737976074, 0.9649993181228638, 0.3806571364402771, 0.4550253748893738],
    "array_api_strict": [0.9007601737976074, 0.9649993181228638, 0.3806571364402771, 0.4550253748893738],
    "torch": [0.43482500314712524, 0.0885692834854126, 0.8834599256515503, 0.3574058413505554],
}
_PINNED_MASK = {
    "numpy": [90, 126, 127, 100, 205],
    "array_api_strict": [206, 250, 180, 155, 212],
    "torch": [38, 62, 122, 11, 31],
}


@pytest.mark.parametrize("name", sorted(_PINNED_UNIFORM))
def test_random_draws_are_pinned(name) -> None:
    if not B.is_available(name):
        pytest.skip(f"{name} is not installed")
    placement = B.resolve("cpu", name)
    draws = B.to_numpy(B.random.uniform(placement, 12345, 7, (2, 3), placement.xp.float32))
    assert draws.dtype == np.float32 and draws.shape == (2, 3)
    assert draws.ravel()[:4].tolist() == _PINNED_UNIFORM[name]
    mask = B.to_numpy(B.random.keep_mask(placement, 12345, 7, (40,), 0.5))
    assert mask.dtype == np.bool_ and np.packbits(mask).tolist() == _PINNED_MASK[name]


def test_numpy_draws_follow_a_channel_last_layout() -> None:
    """With a channel-last ``like``, NumPy's draws are stored channel-last and hold the pinned values."""
    placement = B.resolve("cpu")
    like = np.zeros((2, 4, 5, 3), np.float32).transpose(0, 3, 1, 2)
    mask = B.random.keep_mask(placement, 3, 4, like.shape, 0.3, like=like)
    assert mask.shape == like.shape and mask.transpose(0, 2, 3, 1).flags.c_contiguous
    assert np.packbits(mask.transpose(0, 2, 3, 1).ravel()).tolist() == [
        183, 6, 251, 111, 123, 48, 62, 253, 61, 175, 179, 92, 222, 116, 110]
    np.testing.assert_array_equal(mask, B.random.keep_mask(placement, 3, 4, (2, 4, 5, 3), 0.3).transpose(0, 3, 1, 2))
    draws = B.random.uniform(placement, 3, 4, like.shape, np.float32, like=like)
    assert draws.transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_array_equal(draws, B.random.uniform(placement, 3, 4, (2, 4, 5, 3), np.float32)
                                  .transpose(0, 3, 1, 2))


def test_importing_xpcnn_imports_no_gpu_library() -> None:
    code = ("import sys, xpcnn, xpcnn.backend.libraries, xpcnn.backend.profiling\n"
            "print(sorted(m for m in ('torch', 'jax', 'cupy', 'array_api_strict') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
