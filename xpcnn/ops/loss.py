"""Fused, numerically stable log-softmax + cross-entropy."""

from __future__ import annotations

from typing import Any

from xpcnn import backend as B


def log_softmax(logits: Any) -> Any:
    """Row-wise log-softmax of ``(N, K)`` logits, stable for logits of any magnitude."""
    xp = B.namespace_of(logits)
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))


def one_hot(labels: Any, num_classes: int, dtype: Any) -> Any:
    """``(N,)`` integer labels as an ``(N, K)`` one-hot array of ``dtype``."""
    xp = B.namespace_of(labels)
    classes = xp.arange(num_classes, device=B.device_of(labels))
    return xp.astype(xp.reshape(labels, (-1, 1)) == classes, dtype)


def cross_entropy_forward(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Mean cross-entropy of ``(N, K)`` logits against ``(N,)`` labels.

    Returns ``(loss (0-d array), grad_logits (N, K))``: the gradient ``(softmax - one_hot) / N``
    comes almost free with the forward pass.
    """
    xp = B.namespace_of(logits, labels)
    n, k = logits.shape
    log_p = log_softmax(logits)
    target = one_hot(labels, k, logits.dtype)
    loss = -xp.sum(target * log_p) / n
    grad = (xp.exp(log_p) - target) / n
    return loss, grad
