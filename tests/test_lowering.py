"""The convolution lowerings: which one "auto" picks, and that they agree with each other."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn import layers as L
from xpcnn.ops.lowering import choose_lowering


@pytest.mark.parametrize("c, o, k, h, banded", [
    (8, 8, 5, 24, True),     # seed-deep's second conv: few output channels, the banded weight wins
    (1, 8, 5, 28, True),     # seed-deep's first conv
    (6, 16, 5, 14, True),    # lenet5's second conv
    (1, 32, 3, 28, False),   # mnist-cnn's first conv: 32 outputs x 9 wasted columns -> im2col
    (1, 8, 3, 28, False),    # seed-simple's conv: one input channel, score 75 -> im2col
    (16, 8, 3, 28, False),   # score 75 but a 1.1 MiB banded weight -> im2col
    (32, 64, 3, 26, False),  # mnist-cnn's second conv
])
def test_auto_picks_the_measured_winner(c, o, k, h, banded) -> None:
    out = h - k + 1
    plan = choose_lowering((128, h, h, c), (o, c, k, k), (1, 1), (1, 1), (out, out))
    assert plan.banded is banded


def test_lowerings_agree_on_a_preset_sized_conv(rng) -> None:
    """Both lowerings give the same output and gradients (float64) on a mid-sized layer."""
    x = rng.standard_normal((4, 8, 12, 12))
    grad_y = rng.standard_normal((4, 16, 6, 6))
    results = []
    for lowering in ("columns", "rows"):
        layer = L.Conv2D(8, 16, 3, stride=2, padding=1, seed=3, lowering=lowering)
        layer.params = {k: np.asarray(v, dtype=np.float64) for k, v in layer.params.items()}
        y = layer.forward(x)
        results.append((y, layer.backward(grad_y), layer.grads["weight"], layer.grads["bias"]))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
