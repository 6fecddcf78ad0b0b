"""xpcnn: convolutional neural networks on any Array API backend (NumPy, CuPy, PyTorch, JAX, array_api_strict)."""

from xpcnn import layers, losses, models, optim
from xpcnn.layers import manual_seed
from xpcnn.model import Sequential
from xpcnn.training import Trainer

__version__ = "0.1.0"

__all__ = ["Sequential", "Trainer", "__version__", "layers", "losses", "manual_seed", "models", "optim"]
