"""The kernel registry: one decision point between the reference ops and the accelerated kernels."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import xpcnn
from xpcnn.kernels import find, kernels, registry
from xpcnn.ops import activations


def test_every_kernel_replaces_a_reference_op() -> None:
    found = kernels("numpy")
    assert {k.op for k in found} <= set(registry.references()), "a kernel registered for an op nobody dispatches"
    assert {"conv2d_forward", "linear_forward", "relu", "adam_step", "max_pool_grad"} <= {k.op for k in found}
    assert all(k.backend == "numpy" and k.name.startswith("xpcnn.kernels.numpy.") for k in found)


def test_dispatch_follows_the_switch_and_the_arrays(rng) -> None:
    x = rng.standard_normal((4, 3)).astype(np.float32)
    with xpcnn.settings(kernels=True):
        assert find("relu", "numpy", x) is not None
        assert find("relu", "numpy", x.astype(np.int64)) is None  # the kernel's condition: float arrays
        assert find("relu", "torch", x) is None                     # no torch kernels
        fast = activations.relu_forward(x)
    with xpcnn.settings(kernels=False):
        assert find("relu", "numpy", x) is None
        reference = activations.relu_forward(x)
    np.testing.assert_array_equal(fast, reference)
    np.testing.assert_array_equal(activations.relu_forward.reference(x), reference)


def test_importing_xpcnn_loads_no_kernel_package_and_no_compiler() -> None:
    script = ("import sys, numpy, xpcnn, xpcnn.kernels\n"
              "print(sorted(m for m in ('numba', 'llvmlite', 'threadpoolctl', 'xpcnn.kernels.numpy', 'torch', 'jax')"
              " if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("lowering", ["rows", "tiles", "direct"])
def test_a_numpy_lowering_elsewhere_is_a_clear_error(lowering) -> None:
    torch = pytest.importorskip("torch")
    conv = xpcnn.layers.Conv2D(2, 3, 3, lowering=lowering)
    conv.params = {k: torch.as_tensor(v) for k, v in conv.params.items()}
    with pytest.raises(ValueError, match=f"the '{lowering}' lowering is an accelerated kernel for NumPy arrays"):
        conv.forward(torch.zeros((1, 2, 5, 5)))
