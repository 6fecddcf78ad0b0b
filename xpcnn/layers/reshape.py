"""``Flatten``: ``(N, C, H, W)`` -> ``(N, C*H*W)`` in PyTorch's (C, H, W) order."""

from __future__ import annotations

import math
from typing import Any

from xpcnn.layers.base import Layer


class Flatten(Layer):
    """Flatten every axis but the first."""

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (input_shape[0], math.prod(input_shape[1:]))

    def forward(self, x: Any) -> Any:
        xp = self._namespace(x)
        self._shape = tuple(x.shape)
        return xp.reshape(x, self.output_shape(self._shape))

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        self._expect_cached(self._shape)
        return self._namespace(grad_out).reshape(grad_out, self._shape)
