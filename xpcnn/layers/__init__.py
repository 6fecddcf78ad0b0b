"""CNN layers: each ``forward(x)`` caches what ``backward(grad_out)`` needs; inputs are ``(N, C, H, W)``."""

from xpcnn.layers.activations import GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from xpcnn.layers.base import Layer, manual_seed
from xpcnn.layers.conv import Conv2D
from xpcnn.layers.dense import Dense
from xpcnn.layers.pooling import AdaptiveAvgPool2d, AvgPool2D, GlobalAvgPool2D, MaxPool2D
from xpcnn.layers.regularization import BatchNorm2D, Dropout
from xpcnn.layers.reshape import Flatten
from xpcnn.layers.residual import Residual

#: PyTorch's names for the same layers (``AdaptiveAvgPool2d(1)``, a function, builds a GlobalAvgPool2D).
Conv2d, Linear, MaxPool2d, AvgPool2d, BatchNorm2d = Conv2D, Dense, MaxPool2D, AvgPool2D, BatchNorm2D

#: Layer classes by name, for rebuilding a model from its saved config.
LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, AvgPool2D, Dense, ReLU, LeakyReLU, Tanh,
                                             Sigmoid, Flatten, Dropout, BatchNorm2D, GELU, GlobalAvgPool2D,
                                             Residual)}

__all__ = [
                                             "AdaptiveAvgPool2d",
                                             "AvgPool2d",
                                             "BatchNorm2d",
                                             "Conv2d",
                                             "Linear",
                                             "MaxPool2d",
                                             "LAYER_TYPES",
                                             "AvgPool2D",
                                             "BatchNorm2D",
                                             "Conv2D",
                                             "Dense",
                                             "Dropout",
                                             "Flatten",
                                             "GELU",
                                             "GlobalAvgPool2D",
                                             "Layer",
                                             "LeakyReLU",
                                             "MaxPool2D",
                                             "ReLU",
                                             "Residual",
                                             "Sigmoid",
                                             "Tanh",
                                             "manual_seed",
]
