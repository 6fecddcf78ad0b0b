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


def cross_entropy_forward(logits: Any, labels: Any, label_smoothing: float = 0.0) -> tuple[Any, Any]:
    """Mean cross-entropy of ``(N, K)`` floating-point logits against ``(N,)`` integer labels.

    Returns ``(loss (0-d array), grad_logits (N, K))``: the gradient ``(softmax - target) / N`` comes almost free
    with the forward pass. The loss picks each row's label entry of the log-softmax (no one-hot product, whose
    ``0 * -inf`` would make a ``-inf`` logit elsewhere in the row NaN), so it equals PyTorch's ``cross_entropy``
    for any logits, ``-inf`` included.

    ``label_smoothing`` ``eps`` in [0, 1] mixes the one-hot target with the uniform one, as PyTorch's
    ``label_smoothing``: loss ``(1 - eps) * nll + eps * mean over the K classes of -log p``, target
    ``(1 - eps) * one_hot + eps / K`` (a ``-inf`` logit then makes the loss ``inf``, as in PyTorch).
    """
    xp = B.namespace_of(logits, labels)
    n, k = logits.shape
    log_p = log_softmax(logits)
    index = xp.reshape(xp.astype(labels, xp.int64), (-1, 1))  # int64: what torch's gather takes
    nll = -xp.sum(xp.take_along_axis(log_p, index, axis=1))
    target = one_hot(labels, k, logits.dtype)
    if label_smoothing:
        loss = ((1.0 - label_smoothing) * nll - label_smoothing / k * xp.sum(log_p)) / n
        target = target * (1.0 - label_smoothing) + label_smoothing / k
    else:
        loss = nll / n
    grad = (xp.exp(log_p) - target) / n
    return loss, grad
