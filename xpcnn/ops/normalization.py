"""Batch normalization over the channel axis of ``(N, C, H, W)`` input, as ``torch.nn.BatchNorm2d``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xpcnn import backend as B
from xpcnn.kernels import dispatch
from xpcnn.ops.activations import relu_backward, relu_forward


@dataclass
class BatchNormContext:
    """What the backward pass needs: the input ``x`` (``x_hat`` is recomputed from it, which costs less than
    writing and reading it back), the ``(C,)`` statistics it was normalized with, the count reduced over
    (training mode), and, where a ReLU was fused in, the output ``y`` (the ReLU's mask is ``y > 0``)."""

    x: Any
    mean: Any
    inv_std: Any
    count: int
    training: bool
    y: Any = None

    @property
    def x_hat(self) -> Any:
        """The normalized input ``(x - mean) * inv_std``, ``(N, C, H, W)``."""
        xp = B.namespace_of(self.x)
        c = self.x.shape[1]
        return (self.x - xp.reshape(self.mean, (1, c, 1, 1))) * xp.reshape(self.inv_std, (1, c, 1, 1))


def channel_sums(*arrays: Any) -> list[Any]:
    """Each ``(N, C, H, W)`` array summed over N, H and W: ``(C,)`` each, in its dtype.

    Float32 is added up in float64 where the backend holds it (:func:`xpcnn.backend.accumulation_dtype`), as
    PyTorch's CPU batch norm does: these sums cancel (a batch-norm gradient's sums are small next to their
    terms), and a float32 sum over N*H*W values, one by one as NumPy adds along strided axes, was about 10% off
    the bias gradient at batch 128 of 28x28 images."""
    xp = B.namespace_of(*arrays)
    return [xp.astype(xp.sum(a, axis=(0, 2, 3), dtype=B.accumulation_dtype(a)), a.dtype) for a in arrays]


def updated_running_stats(running_mean: Any, running_var: Any, mean: Any, var: Any, count: int,
                          momentum: float) -> tuple[Any, Any]:
    """PyTorch's running statistics after a training batch of ``count`` values per channel whose mean and
    biased variance are ``mean`` and ``var`` (all ``(C,)``): ``(1 - momentum) * old + momentum * new``, with the
    unbiased variance ``var * count / (count - 1)``. Shared by every backend's batch-norm forward."""
    unbiased = var * (count / max(count - 1, 1))
    return ((1 - momentum) * running_mean + momentum * mean, (1 - momentum) * running_var + momentum * unbiased)


@dispatch("batch_norm2d_forward")
def batch_norm2d_forward(x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any,
                         training: bool, momentum: float = 0.1, eps: float = 1e-5, relu: bool = False
                         ) -> tuple[Any, Any, Any, BatchNormContext]:
    """Returns ``(y, new_running_mean, new_running_var, ctx)``; ``x`` and ``y`` are ``(N, C, H, W)``, all
    statistics ``(C,)``.

    Training normalizes with the batch's biased variance and updates the running variance
    with the unbiased one; evaluation uses the running statistics. ``relu=True`` returns ``max(y, 0)``
    (a BatchNorm2D followed by a ReLU, as :mod:`xpcnn.plan` fuses them) and the backward pass applies
    ReLU's gradient too.
    """
    xp = B.namespace_of(x, gamma)
    n, c, h, w = x.shape
    count = n * h * w
    if training:
        mean = channel_sums(x)[0] / count
        centred = x - xp.reshape(mean, (1, c, 1, 1))
        var = channel_sums(centred * centred)[0] / count  # two passes: no cancellation of E[x^2] - E[x]^2
        running_mean, running_var = updated_running_stats(running_mean, running_var, mean, var, count, momentum)
    else:
        mean, var = running_mean, running_var
    inv_std = 1.0 / xp.sqrt(var + eps)
    ctx = BatchNormContext(x, mean, inv_std, count, training)
    y = ctx.x_hat * xp.reshape(gamma, (1, c, 1, 1)) + xp.reshape(beta, (1, c, 1, 1))
    if relu:
        y = ctx.y = relu_forward(y)
    return y, running_mean, running_var, ctx


@dispatch("batch_norm2d_backward")
def batch_norm2d_backward(grad_y: Any, gamma: Any, ctx: BatchNormContext) -> tuple[Any, Any, Any]:
    """Returns ``(grad_x (N, C, H, W), grad_gamma (C,), grad_beta (C,))``; with a fused ReLU (``ctx.y`` set),
    the gradients of ``max(batch_norm(x), 0)``."""
    xp = B.namespace_of(grad_y, gamma)
    c = gamma.shape[0]
    if ctx.y is not None:
        grad_y = relu_backward(grad_y, ctx.y)
    x_hat = ctx.x_hat
    grad_beta, grad_gamma = channel_sums(grad_y, grad_y * x_hat)
    scale = xp.reshape(gamma * ctx.inv_std, (1, c, 1, 1))
    if not ctx.training:
        return grad_y * scale, grad_gamma, grad_beta
    mean_g = xp.reshape(grad_beta / ctx.count, (1, c, 1, 1))
    mean_gx = xp.reshape(grad_gamma / ctx.count, (1, c, 1, 1))
    grad_x = scale * (grad_y - mean_g - x_hat * mean_gx)
    return grad_x, grad_gamma, grad_beta
