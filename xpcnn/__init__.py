"""xpcnn: convolutional neural networks on any Array API backend (NumPy, CuPy, PyTorch, JAX, array_api_strict)."""

from xpcnn import layers, losses, models, optim
from xpcnn.checkpoint import load_model as load
from xpcnn.layers import manual_seed
from xpcnn.model import Sequential
from xpcnn.settings import settings
from xpcnn.training import Trainer

__version__ = "0.1.0"


def enable_wide_vectors() -> bool:
    """Let numba's code use 512-bit vectors on CPUs with AVX-512 (the direct convolution kernels then take
    up to 64 channels and run faster: bench/results/optimization-log.md, step 41); returns whether they
    are on. Process-wide, so xpcnn never does it on import: call it once, before anything compiles numba
    code (the ``xpcnn`` command does).
    See :func:`xpcnn.kernels.numpy.compiled.enable_wide_vectors`."""
    from xpcnn.kernels.numpy.compiled import enable_wide_vectors as enable
    return enable()

__all__ = ["Sequential", "Trainer", "__version__", "enable_wide_vectors", "layers", "load", "losses", "manual_seed",
           "models", "optim", "settings"]
