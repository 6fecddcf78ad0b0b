"""PNG plots of a training run (needs matplotlib: pip install 'xpcnn[plots]')."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def plot_history(history: list[dict[str, Any]], path: Path) -> Path:
    """Loss and accuracy per epoch (training and validation), side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label, ax in (("loss", "train", ax_loss), ("val_loss", "validation", ax_loss),
                           ("accuracy", "train", ax_acc), ("val_accuracy", "validation", ax_acc)):
        values = [r.get(key) for r in history]
        if any(v is not None for v in values):
            ax.plot(epochs, values, marker="o", label=label)
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.set(title="accuracy", xlabel="epoch")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_recall(recall: Sequence[float], classes: Sequence[str], path: Path) -> Path:
    """Per-class recall as bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar(range(len(recall)), recall, color="tab:blue")
    ax.bar_label(bars, labels=[f"{r:.3f}" for r in recall], fontsize=8)
    ax.set_xticks(range(len(recall)), classes, rotation=30, ha="right")
    ax.set(ylim=(0, 1.08), ylabel="recall", title="per-class recall (test set)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
