"""Loss functions. ``forward`` returns a 0-d array; ``backward`` returns dL/d_logits."""

from __future__ import annotations

import math
from typing import Any

from xpcnn import backend as B
from xpcnn.errors import DTypeError, LabelError, ShapeError
from xpcnn.ops.loss import cross_entropy_forward


def check_labels(labels: Any, num_classes: int, batch: int | None = None, where: str = "labels") -> None:
    """Raise :class:`LabelError` unless ``labels`` is a 1-D integer array with values in ``[0, num_classes)``.

    Reading the min and max synchronizes a GPU, so trainers check a dataset once, not each batch.
    """
    xp = B.namespace_of(labels)
    if not xp.isdtype(labels.dtype, "integral"):
        raise LabelError(f"{where}: expected integer class labels, got dtype {labels.dtype}; "
                         "convert them with astype(int64) (one-hot or float labels are not accepted)")
    if len(labels.shape) != 1:
        raise LabelError(f"{where}: expected a 1-D array of class indices, got shape {tuple(labels.shape)}")
    if batch is not None and labels.shape[0] != batch:
        raise LabelError(f"{where}: got {labels.shape[0]} labels for a batch of {batch} inputs")
    if labels.shape[0]:
        low, high = int(xp.min(labels)), int(xp.max(labels))
        if low < 0 or high >= num_classes:
            raise LabelError(f"{where}: labels must be in [0, {num_classes - 1}] for {num_classes} classes, "
                             f"got values from {low} to {high}")


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer labels, fused and numerically stable.

    The values are PyTorch's ``cross_entropy`` (mean reduction), ``-inf`` logits included. ``check=False``
    skips the label check (:func:`check_labels`), which synchronizes a GPU. ``label_smoothing`` ``eps`` is
    PyTorch's: the loss is ``(1 - eps) * nll + eps * (mean over the classes of -log p)``, averaged over the batch.

    Raises ValueError for a ``label_smoothing`` that is not a number in [0, 1].
    """

    def __init__(self, check: bool = True, label_smoothing: float = 0.0) -> None:
        try:
            smoothing = float(label_smoothing)
        except (TypeError, ValueError):
            smoothing = math.nan
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"SoftmaxCrossEntropy: label_smoothing must be a number in [0, 1], got "
                             f"{label_smoothing!r}")
        self.check, self.label_smoothing = check, smoothing
        self._grad = None

    def forward(self, logits: Any, labels: Any) -> Any:
        """Floating-point logits ``(N, K)``, labels ``(N,)`` integers in ``[0, K)`` -> mean loss (0-d array of
        the logits' dtype).

        Raises :class:`ShapeError` for logits that are not ``(N, K)``, :class:`DTypeError` for integer or
        boolean logits (refused, as PyTorch does: cast them with ``astype(float32)``) and :class:`LabelError`
        for bad labels (when ``check`` is on).
        """
        if len(logits.shape) != 2:
            raise ShapeError(f"SoftmaxCrossEntropy: expected logits (N, K), got shape {tuple(logits.shape)}")
        xp = B.namespace_of(logits, labels, where="SoftmaxCrossEntropy")
        if not xp.isdtype(logits.dtype, "real floating"):
            raise DTypeError(f"SoftmaxCrossEntropy: expected floating-point logits, got dtype {logits.dtype}; "
                             "cast them with astype(float32) (integer logits would wrap in the softmax)")
        if self.check:
            check_labels(labels, logits.shape[1], logits.shape[0], where="SoftmaxCrossEntropy")
        loss, self._grad = cross_entropy_forward(logits, labels, self.label_smoothing)
        return loss

    __call__ = forward

    def backward(self) -> Any:
        """dL/d_logits ``(N, K)`` of the last :meth:`forward`."""
        if self._grad is None:
            raise RuntimeError("SoftmaxCrossEntropy: backward() called before forward()")
        return self._grad
