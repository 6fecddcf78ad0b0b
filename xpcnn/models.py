"""Preset networks: four for 28x28 single-channel images (MNIST, Fashion-MNIST) and 10 classes, and two residual
networks for any channel count, image size and class count (``resnet20``, ``fastnet``).

``resnet20`` is He et al. 2016's CIFAR ResNet (section 4.2: a 3x3 conv with 16 channels, three stages of three
basic blocks with 16, 32 and 64 channels, the second and third starting with stride 2, global average pooling and
a linear layer). Its shortcuts are option B, a strided 1x1 conv with batch norm where the shape changes (two
blocks), the identity elsewhere: 272,474 parameters for 3 input channels and 10 classes (option A, zero-padded
identity shortcuts, has 269,722).
``fastnet`` follows the CIFAR-10 speed runs (David Page's ResNet-9, Keller Jordan's airbench): conv-BatchNorm-ReLU
blocks of 64, 128 and 256 channels, two 2x2 max-pools, one residual block, global average pooling and a linear
layer (0.67 M parameters); train it with a large batch, Nesterov SGD, label smoothing and a warm-up schedule, e.g.
``xpcnn train --model fastnet --batch-size 512 --optimizer sgd --nesterov --lr 0.2 --weight-decay 5e-4
--label-smoothing 0.2 --schedule onecycle``. Convolutions followed by batch norm have no bias. Weights start as
PyTorch's defaults (uniform conv and linear init, batch norm 1 and 0), drawn from the seed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from xpcnn.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    MaxPool2D,
    ReLU,
    Residual,
    Tanh,
)
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


def _conv_bn_relu(seeds: Callable[[], tuple[int, int]], cin: int, cout: int, stride: int = 1) -> list[Layer]:
    return [Conv2D(cin, cout, 3, stride=stride, padding=1, bias=False, seed=seeds()), BatchNorm2D(cout), ReLU()]


def _resnet20(seeds: Callable[[], tuple[int, int]], in_channels: int, image_size: tuple[int, int],
              num_classes: int) -> list[Layer]:
    layers = _conv_bn_relu(seeds, in_channels, 16)
    cin = 16
    for width, first_stride in ((16, 1), (32, 2), (64, 2)):
        for b in range(3):
            stride = first_stride if b == 0 else 1
            block = [*_conv_bn_relu(seeds, cin, width, stride),
                     Conv2D(width, width, 3, padding=1, bias=False, seed=seeds()), BatchNorm2D(width)]
            shortcut = None if stride == 1 and cin == width else [
                Conv2D(cin, width, 1, stride=stride, bias=False, seed=seeds()), BatchNorm2D(width)]  # option B
            layers += [Residual(block, shortcut), ReLU()]
            cin = width
    return layers + [GlobalAvgPool2D(), Flatten(), Dense(64, num_classes, seed=seeds())]


def _fastnet(seeds: Callable[[], tuple[int, int]], in_channels: int, image_size: tuple[int, int],
             num_classes: int) -> list[Layer]:
    if image_size[0] % 4 or image_size[1] % 4:
        raise ValueError(f"fastnet pools twice by 2: its image_size must be divisible by 4, got "
                         f"{image_size[0]}x{image_size[1]}; resize the images (e.g. to 32x32 or 28x28) or use resnet20")
    return [*_conv_bn_relu(seeds, in_channels, 64),
            *_conv_bn_relu(seeds, 64, 128), MaxPool2D(2),
            Residual([*_conv_bn_relu(seeds, 128, 128), *_conv_bn_relu(seeds, 128, 128)]),
            *_conv_bn_relu(seeds, 128, 256), MaxPool2D(2),
            GlobalAvgPool2D(), Flatten(), Dense(256, num_classes, seed=seeds())]


@dataclass(frozen=True)
class Preset:
    """A preset: ``layers`` builds its layer list; ``shaped`` presets take ``(seeds, in_channels, image_size,
    num_classes)``, the others ``(s)`` (``s(index)`` the seed of the layer at ``index``) for 1x28x28 and 10 classes."""

    layers: Callable[..., list[Layer]]
    shaped: bool = False


PRESETS: dict[str, Preset] = {
    "seed-simple": Preset(_seed_simple),
    "seed-deep": Preset(_seed_deep),
    "mnist-cnn": Preset(_mnist_cnn),
    "lenet5": Preset(_lenet5),
    "resnet20": Preset(_resnet20, shaped=True),
    "fastnet": Preset(_fastnet, shaped=True),
}

#: A shaped preset's input and classes when not given: CIFAR-10's.
SHAPED_DEFAULTS = {"in_channels": 3, "image_size": 32, "num_classes": 10}


def takes_shape(name: str) -> bool:
    """Whether preset ``name`` is built for a given channel count, image size and class count."""
    return name in PRESETS and PRESETS[name].shaped


def build(name: str, seed: int = 0, in_channels: int | None = None, image_size: int | tuple[int, int] | None = None,
          num_classes: int | None = None) -> Sequential:
    """A preset network (NumPy, float32; move it with ``.to(...)``), weights drawn from ``seed``.

    The same seed gives the same weights on every backend. ``seed-simple``, ``seed-deep``, ``mnist-cnn`` and
    ``lenet5`` take ``(N, 1, 28, 28)`` input and give ``(N, 10)``. ``resnet20`` and ``fastnet`` take
    ``(N, in_channels, H, W)`` with ``image_size`` ``H`` (or ``(H, W)``) and give ``(N, num_classes)``; by default
    CIFAR-10's 3, 32 and 10 (``xpcnn train`` passes the dataset's). ``image_size`` only checks that the network pools
    it cleanly (fastnet: divisible by 4); neither preset's parameters depend on it.

    Raises ValueError for an unknown name, a negative seed, a size or count that is not a positive int, an image
    size a preset does not pool cleanly, and a shape or class count given to a 28x28 preset that differs from its own.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(PRESETS)}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    given = {"in_channels": in_channels, "image_size": image_size, "num_classes": num_classes}
    if not PRESETS[name].shaped:
        fixed = {"in_channels": 1, "image_size": 28, "num_classes": 10}
        for key, value in given.items():
            if value is not None and value not in (fixed[key], (fixed[key],) * 2, [fixed[key]] * 2):
                raise ValueError(f"{name} is built for 1x28x28 images and 10 classes, got {key}={value!r}; use "
                                 "resnet20 or fastnet for other input shapes and class counts")
        return Sequential(PRESETS[name].layers(lambda index: (seed, index)), name=name)
    values = {k: SHAPED_DEFAULTS[k] if v is None else v for k, v in given.items()}
    size = values["image_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    for key, value in (("in_channels", values["in_channels"]), ("num_classes", values["num_classes"]),
                       ("image_size", size[0]), ("image_size", size[-1])):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or len(size) != 2:
            raise ValueError(f"{name}: {key} must be a positive int" + (" or a pair of them" * (key == "image_size"))
                             + f", got {given[key]!r}")
    counter = itertools.count()
    layers = PRESETS[name].layers(lambda: (seed, next(counter)), values["in_channels"], size, values["num_classes"])
    return Sequential(layers, name=name)

