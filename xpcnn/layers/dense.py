"""``Dense``: a fully connected layer (PyTorch's ``nn.Linear``)."""

from __future__ import annotations

from typing import Any

from xpcnn.errors import ShapeError
from xpcnn.layers.base import Layer, sub_seed, uniform_init
from xpcnn.ops.linear import linear_backward, linear_forward


class Dense(Layer):
    """``y = x @ weight.T + bias``; x ``(N, in_features)`` -> ``(N, out_features)``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 seed: int | tuple[int, ...] | None = None) -> None:
        super().__init__()
        for label, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Dense: {label} must be a positive int, got {value!r}")
        self.in_features, self.out_features, self.use_bias = in_features, out_features, bias
        seeds = (None, None) if seed is None else (sub_seed(seed, 0), sub_seed(seed, 1))
        self.params["weight"] = uniform_init(seeds[0], (out_features, in_features), in_features)
        if bias:
            self.params["bias"] = uniform_init(seeds[1], (out_features,), in_features)
        self._x = None

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.use_bias}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2 or input_shape[1] != self.in_features:
            raise ShapeError(f"{self.name}: expected input (N, {self.in_features}), got shape "
                             f"{tuple(input_shape)}; add a Flatten() before Dense or fix in_features")
        return (input_shape[0], self.out_features)

    def forward(self, x: Any) -> Any:
        self._expect_rank(x, 2, f"(N, {self.in_features})")
        self._namespace(x)
        self.output_shape(tuple(x.shape))
        self._x = x
        return linear_forward(x, self.params["weight"], self.params.get("bias"))

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        self._expect_cached(self._x)
        grad_x, grad_w, grad_b = linear_backward(grad_out, self._x, self.params["weight"], self.use_bias,
                                                 need_input_grad)
        self.grads["weight"] = grad_w
        if grad_b is not None:
            self.grads["bias"] = grad_b
        return grad_x
