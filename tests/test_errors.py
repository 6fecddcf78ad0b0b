"""Bad input gets an error that names the layer, what it expected and what it got."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import layers as L
from xpcnn.errors import LabelError, ShapeError
from xpcnn.losses import SoftmaxCrossEntropy
from xpcnn.kernels.numpy.lowering import choose_lowering


def test_wrong_rank() -> None:
    model = xpcnn.models.build("seed-deep")
    with pytest.raises(ShapeError, match=r"layer 0 \(Conv2D\): expected a 4-D input \(N, C, H, W\), got shape \(28, 28\)"):
        model.forward(np.zeros((28, 28), np.float32))


def test_channel_mismatch() -> None:
    with pytest.raises(ShapeError, match="expected 3 input channels, got 1"):
        L.Conv2D(3, 4, 3).forward(np.zeros((2, 1, 8, 8), np.float32))


def test_input_smaller_than_kernel() -> None:
    with pytest.raises(ShapeError, match="smaller than the 5x5 kernel"):
        L.Conv2D(1, 4, 5).forward(np.zeros((2, 1, 3, 3), np.float32))
    with pytest.raises(ShapeError, match="smaller than the 3x3 pooling window"):
        L.MaxPool2D(3).forward(np.zeros((2, 1, 2, 2), np.float32))


def test_dense_feature_mismatch() -> None:
    with pytest.raises(ShapeError, match=r"expected input \(N, 10\), got shape \(2, 12\)"):
        L.Dense(10, 3).forward(np.zeros((2, 12), np.float32))


@pytest.mark.parametrize("labels, message", [
    (np.array([0.0, 1.0]), "expected integer class labels, got dtype float64"),
    (np.array([0, 10]), r"labels must be in \[0, 9\].*from 0 to 10"),
    (np.array([-1, 2]), r"from -1 to 2"),
    (np.array([[0, 1]]), "1-D array"),
    (np.array([0, 1, 2]), "got 3 labels for a batch of 2"),
])
def test_bad_labels(labels, message) -> None:
    with pytest.raises(LabelError, match=message):
        SoftmaxCrossEntropy().forward(np.zeros((2, 10), np.float32), labels)


@pytest.mark.parametrize("make, message", [
    (lambda: L.Conv2D(0, 3, 3), "in_channels must be a positive int"),
    (lambda: L.Conv2D(1, 3, 3, padding=-1), "padding must be non-negative"),
    (lambda: L.Conv2D(1, 3, 3, stride=2, padding="same"), "padding='same' needs stride 1"),
    (lambda: L.Conv2D(1, 3, 3, padding="full"), "padding must be an int, a pair, 'same' or 'valid'"),
    (lambda: L.Conv2D(1, 3, 3, lowering="fft"), "lowering must be one of 'auto', 'columns', 'rows', 'tiles', 'direct', got 'fft'"),
    (lambda: choose_lowering((1, 8, 8, 1), (2, 1, 3, 3), (1, 1), (1, 1), (6, 6), "tiles", tile=0),
     "tile must be a positive int"),
    (lambda: L.Dropout(1.0), r"p must be in \[0, 1\)"),
    (lambda: xpcnn.models.build("resnet"), "unknown model 'resnet'"),
    (lambda: xpcnn.optim.SGD(xpcnn.models.build("seed-simple"), lr=0),
     r"Invalid learning rate: 0 \(must be a finite number > 0\)"),
])
def test_bad_constructor_arguments(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_backward_before_forward() -> None:
    with pytest.raises(RuntimeError, match="backward\\(\\) called before forward\\(\\)"):
        L.Conv2D(1, 2, 3).backward(np.zeros((1, 2, 3, 3), np.float32))


@pytest.mark.parametrize("library, channels, stride, message", [
    ("torch", 2, 1, None),
    ("numpy", 2, 2, r"its input gradient needs stride 1, got \(2, 2\)"),
    ("numpy", 200, 1, r"it takes at most \d+ channels in and out, got 200 in"),
])
def test_direct_lowering_says_when_it_cannot_run(library, channels, stride, message) -> None:
    from xpcnn.kernels.numpy import compiled
    if library == "numpy" and not compiled.available():
        pytest.skip("numba is not installed: the direct lowering's first complaint would be that")
    xp = pytest.importorskip(library)
    layer = L.Conv2D(channels, 3, 3, stride=stride, lowering="direct")
    for name, value in layer.params.items():
        layer.params[name] = xp.asarray(np.asarray(value))
    expected = ("'direct' lowering is an accelerated kernel for NumPy arrays and cannot run here.*lowering='auto'"
                if message is None else f"'direct' lowering cannot run this convolution: {message}.*lowering='auto'")
    with xpcnn.settings(kernels=True), pytest.raises(ValueError, match=expected):
        layer.forward(xp.asarray(np.zeros((1, channels, 6, 6), np.float32)))


def test_direct_is_no_matrix_plan() -> None:
    with pytest.raises(ValueError, match="'direct' lowering is no matrix product"):
        choose_lowering((1, 8, 8, 1), (2, 1, 3, 3), (1, 1), (1, 1), (6, 6), "direct")


@pytest.mark.parametrize("lowering", ["auto", "columns"])
def test_conv_backward_refuses_add_to_of_another_shape(lowering, rng) -> None:
    """A wrong-shaped ``add_to`` is refused in one line before any kernel reads it (the direct kernels index
    without bounds checks), on every path: the reference op where the kernels are off."""
    layer = L.Conv2D(3, 8, 3, padding=1, lowering=lowering)
    y = layer.forward(rng.standard_normal((2, 3, 5, 6)).astype(np.float32))
    with pytest.raises(ShapeError, match=r"add_to has shape \(2, 3, 5, 5\), but the convolution's "
                                             r"input had shape \(2, 3, 5, 6\)"):
        layer.backward(np.ones(y.shape, np.float32), add_to=np.zeros((2, 3, 5, 5), np.float32))
