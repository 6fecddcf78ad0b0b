"""Shared fixtures: every backend-generic test runs once per available Array API backend, and every
test once per accelerator setting: the NumPy kernels with 2 worker threads (and every split
threshold at zero, so small test arrays take the threaded paths), with 1 thread, and switched off
(the portable reference ops only). Tests on another backend run under the first setting only: the
kernels are NumPy's."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xpcnn
from xpcnn import backend as B
from xpcnn.errors import BackendUnavailableError, DeviceUnavailableError

ROOT = Path(__file__).resolve().parents[1]

BACKEND_PARAMS = ["numpy", "array_api_strict", "torch", "jax", "cupy", "torch-cuda"]

#: Accelerator settings every test runs under (``$XPCNN_TEST_ACCEL``, comma-separated, picks some).
ACCELERATORS = {
    "threads2": {"kernels": True, "num_threads": 2, "split_min_bytes": 0, "direct_split_min_flops": 0,
                 "split_min_matmul_flops": 0},
    "threads1": {"kernels": True, "num_threads": 1},
    "reference": {"kernels": False},
}

try:  # the tests check gradients in float64, which JAX computes only with x64 on (a process-wide switch)
    import jax
    jax.config.update("jax_enable_x64", True)
except ImportError:
    pass


@dataclass
class Backend:
    """A backend under test: its placement plus host <-> device conversion."""

    name: str
    placement: B.Placement

    @property
    def xp(self) -> Any:
        return self.placement.xp

    def asarray(self, host: np.ndarray) -> Any:
        return B.from_numpy(np.asarray(host), self.placement)

    def numpy(self, x: Any) -> np.ndarray:
        return np.asarray(B.to_numpy(x))


def make_backend(name: str) -> Backend:
    """The Backend for ``name``, or a pytest skip that says why it cannot run here."""
    device = "cuda" if name in ("cupy", "torch-cuda") else "cpu"
    try:
        return Backend(name, B.resolve(device, name.removesuffix("-cuda")))
    except DeviceUnavailableError as exc:
        pytest.skip(f"no CUDA device ({exc})")
    except BackendUnavailableError as exc:
        pytest.skip(f"{name} is not installed ({exc})")


def selected_backends() -> list[str]:
    """All backends, or those named in $XPCNN_TEST_BACKENDS (comma-separated; nox sets it per session)."""
    chosen = os.environ.get("XPCNN_TEST_BACKENDS")
    return [b for b in BACKEND_PARAMS if not chosen or b in chosen.split(",")]


def selected_accelerators() -> list[str]:
    chosen = os.environ.get("XPCNN_TEST_ACCEL")
    return [a for a in ACCELERATORS if not chosen or a in chosen.split(",")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test once per accelerator setting; a test on a backend other than NumPy under the first only."""
    accelerators = selected_accelerators()
    if metafunc.definition.get_closest_marker("subprocesses"):  # the setting would not reach them
        accelerators = accelerators[:1]
    if "backend" in metafunc.fixturenames:
        pairs = [(b, a) for b in selected_backends() for a in accelerators if b == "numpy" or a == accelerators[0]]
        metafunc.parametrize(("backend", "accelerator"), pairs, indirect=True, ids=[f"{b}-{a}" for b, a in pairs])
    else:
        metafunc.parametrize("accelerator", accelerators, indirect=True)


@pytest.fixture(autouse=True)
def accelerator(request: pytest.FixtureRequest):
    """The accelerator setting of this run of the test (see the module docstring)."""
    with xpcnn.settings(**ACCELERATORS[request.param]):
        yield request.param


@pytest.fixture
def backend(request: pytest.FixtureRequest, accelerator: str) -> Backend:
    return make_backend(request.param)


def needs_kernels(accelerator: str) -> None:
    """Skip, saying why, a test of an accelerated kernel run with the kernels switched off."""
    if accelerator == "reference":
        pytest.skip("tests an accelerated kernel; the kernels are switched off in this run")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """A folder holding MNIST's real test set, ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``
    (10,000 digits): the sample bundled in the package, so that no test needs data from outside the checkout.
    Read-only: a test that changes files copies them into its own folder first."""
    from xpcnn.data import datasets
    return datasets.SAMPLE_DIR


@pytest.fixture
def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint-shaped ``.npz`` whose weight is a pickled object that would create ``marker`` when
    unpickled: ``(path, marker)``. Loading it must fail without running that code."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))
    payload = np.empty(1, dtype=object)
    payload[0] = Exploit()
    path = tmp_path / "evil.npz"
    np.savez(path, __meta__=np.frombuffer(b'{"format": "xpcnn-checkpoint"}', np.uint8), **{"model:0.weight": payload})
    return path, marker

