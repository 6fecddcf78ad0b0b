"""Shared fixtures: every backend-generic test runs once per available Array API backend."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xpcnn import backend as B
from xpcnn.errors import BackendUnavailableError, DeviceUnavailableError

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"

BACKEND_PARAMS = ["numpy", "array_api_strict", "torch", "jax", "cupy", "torch-cuda"]


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


@pytest.fixture(params=selected_backends())
def backend(request: pytest.FixtureRequest) -> Backend:
    return make_backend(request.param)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST test set not found at {SHARED_MNIST}")
    return SHARED_MNIST
