"""Preset networks for 28x28 single-channel images (MNIST, Fashion-MNIST), 10 classes."""

from __future__ import annotations

from collections.abc import Callable

from xpcnn.layers import AvgPool2D, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, Tanh
from xpcnn.model import Sequential


def _seed_simple(s: Callable[[int], tuple[int, int]]) -> list[Layer]:
    # The first seed post's net: conv 3x3x8 (no bias) -> max-pool 2 -> softmax layer.
    return [Conv2D(1, 8, 3, bias=False, seed=s(0)), MaxPool2D(2), Flatten(), Dense(13 * 13 * 8, 10, seed=s(3))]


def _seed_deep(s: Callable[[int], tuple[int, int]]) -> list[Layer]:
    # The second seed post's net.
    return [Conv2D(1, 8, 5, seed=s(0)), ReLU(), Conv2D(8, 8, 5, seed=s(2)), ReLU(), MaxPool2D(2), Flatten(),
            Dense(800, 128, seed=s(6)), ReLU(), Dense(128, 10, seed=s(8))]


def _mnist_cnn(s: Callable[[int], tuple[int, int]]) -> list[Layer]:
    # The classic Keras MNIST example.
    return [Conv2D(1, 32, 3, seed=s(0)), ReLU(), Conv2D(32, 64, 3, seed=s(2)), ReLU(), MaxPool2D(2),
            Dropout(0.25, seed=s(5)[0] * 1000 + 5), Flatten(), Dense(9216, 128, seed=s(7)), ReLU(),
            Dropout(0.5, seed=s(9)[0] * 1000 + 9), Dense(128, 10, seed=s(10))]


def _lenet5(s: Callable[[int], tuple[int, int]]) -> list[Layer]:
    # LeCun et al. 1998 on 28x28 input (padded first conv), tanh and average pooling.
    return [Conv2D(1, 6, 5, padding=2, seed=s(0)), Tanh(), AvgPool2D(2), Conv2D(6, 16, 5, seed=s(3)), Tanh(),
            AvgPool2D(2), Flatten(), Dense(400, 120, seed=s(7)), Tanh(), Dense(120, 84, seed=s(9)), Tanh(),
            Dense(84, 10, seed=s(11))]


PRESETS: dict[str, Callable[[Callable[[int], tuple[int, int]]], list[Layer]]] = {
    "seed-simple": _seed_simple,
    "seed-deep": _seed_deep,
    "mnist-cnn": _mnist_cnn,
    "lenet5": _lenet5,
}


def build(name: str, seed: int = 0) -> Sequential:
    """A preset network (NumPy, float32; move it with ``.to(...)``), weights drawn from ``seed``.

    The same seed gives the same weights on every backend. Input ``(N, 1, 28, 28)``, output ``(N, 10)``.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(PRESETS)}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return Sequential(PRESETS[name](lambda index: (seed, index)), name=name)
