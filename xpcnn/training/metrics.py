"""Classification metrics from a confusion matrix (host side; tiny arrays)."""

from __future__ import annotations

from typing import Any

from xpcnn.backend import host


def confusion_matrix(labels: host.ndarray, predictions: host.ndarray, num_classes: int) -> host.ndarray:
    """``(K, K)`` int64 counts: row = true class, column = predicted class."""
    xp = host.xp
    flat = xp.astype(labels, xp.int64) * num_classes + xp.astype(predictions, xp.int64)
    counts = xp.zeros(num_classes * num_classes, dtype=xp.int64)
    for value in range(num_classes * num_classes):  # K*K <= 100 cheap reductions
        counts[value] = xp.sum(flat == value)
    return xp.reshape(counts, (num_classes, num_classes))


def summarize(confusion: host.ndarray) -> dict[str, Any]:
    """Accuracy, per-class precision and recall (NaN-free: 0 where a class never occurs)."""
    xp = host.xp
    correct = xp.linalg.diagonal(confusion) if hasattr(xp, "linalg") else confusion.diagonal()
    total = int(xp.sum(confusion))
    per_true = xp.sum(confusion, axis=1)
    per_pred = xp.sum(confusion, axis=0)
    recall = [float(c) / float(t) if t else 0.0 for c, t in zip(correct, per_true)]
    precision = [float(c) / float(p) if p else 0.0 for c, p in zip(correct, per_pred)]
    return {"accuracy": float(xp.sum(correct)) / total if total else 0.0,
            "per_class_precision": precision, "per_class_recall": recall,
            "confusion_matrix": [[int(v) for v in row] for row in confusion]}
