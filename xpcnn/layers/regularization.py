"""``Dropout`` and ``BatchNorm2D``: layers that behave differently in training and evaluation."""

from __future__ import annotations

from typing import Any

from xpcnn import backend as B
from xpcnn.backend import host
from xpcnn.errors import ShapeError
from xpcnn.layers.base import Layer, next_seed
from xpcnn.ops.dropout import dropout_backward, dropout_forward, dropout_mask
from xpcnn.ops.normalization import batch_norm2d_backward, batch_norm2d_forward


class Dropout(Layer):
    """Zero each value with probability ``p`` while training (scaling the rest by ``1/(1-p)``); identity in eval."""

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p!r}")
        self.p = float(p)
        self.seed = seed if seed is not None else sum(next_seed()) * 7919
        self.draws = 0  # masks drawn so far: with the seed, the whole random state
        self._mask = None

    def config(self) -> dict[str, Any]:
        return {"p": self.p}

    def forward(self, x: Any) -> Any:
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        keep = B.random.keep_mask(B.placement_of(x), self.seed, self.draws, tuple(x.shape), self.p, like=x)
        self.draws += 1
        self._mask = dropout_mask(keep, self.p, x.dtype)
        return dropout_forward(x, self._mask)

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        return grad_out if self._mask is None else dropout_backward(grad_out, self._mask)


class BatchNorm2D(Layer):
    """Batch normalization of ``(N, C, H, W)`` input per channel, as ``torch.nn.BatchNorm2d``.

    Parameters ``weight`` and ``bias`` ``(C,)``; buffers ``running_mean`` and ``running_var`` ``(C,)``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        if not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(f"BatchNorm2D: num_features must be a positive int, got {num_features!r}")
        self.num_features, self.eps, self.momentum = num_features, float(eps), float(momentum)
        self.params["weight"] = host.full((num_features,), 1.0)
        self.params["bias"] = host.full((num_features,), 0.0)
        self.buffers["running_mean"] = host.full((num_features,), 0.0)
        self.buffers["running_var"] = host.full((num_features,), 1.0)
        self._ctx = None

    def config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 4 or input_shape[1] != self.num_features:
            raise ShapeError(f"{self.name}: expected input (N, {self.num_features}, H, W), "
                             f"got shape {tuple(input_shape)}")
        return tuple(input_shape)

    def forward(self, x: Any, relu: bool = False) -> Any:
        """``(N, C, H, W)`` -> ``(N, C, H, W)``; ``relu=True`` returns ``max(y, 0)`` and :meth:`backward` then
        includes ReLU's gradient (how :mod:`xpcnn.plan` runs a BatchNorm2D followed by a ReLU: one pass less
        each way). Raises :class:`~xpcnn.errors.ShapeError` for input of another rank or channel count, and in
        training for a batch with one value per channel."""
        self._expect_rank(x, 4, "(N, C, H, W)")
        self._namespace(x)
        self.output_shape(tuple(x.shape))
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] <= 1:
            raise ShapeError(f"{self.name}: training needs more than one value per channel, got shape "
                             f"{tuple(x.shape)}; use a larger batch or call eval()")
        y, mean, var, self._ctx = batch_norm2d_forward(
            x, self.params["weight"], self.params["bias"], self.buffers["running_mean"],
            self.buffers["running_var"], self.training, self.momentum, self.eps, relu=relu)
        self.buffers["running_mean"], self.buffers["running_var"] = mean, var
        return y

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        self._expect_cached(self._ctx)
        grad_x, grad_gamma, grad_beta = batch_norm2d_backward(grad_out, self.params["weight"], self._ctx)
        self.grads["weight"], self.grads["bias"] = grad_gamma, grad_beta
        return grad_x
