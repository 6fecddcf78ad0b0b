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


def run_title(model: str | None = None, dataset: str | None = None) -> str | None:
    """``"seed-deep on mnist"``, or whichever of the two is known, or None."""
    if model and dataset:
        return f"{model} on {dataset}"
    return model or dataset or None


def history_figure(history: list[dict[str, Any]], model: str | None = None, dataset: str | None = None) -> Any:
    """The matplotlib Figure of :func:`plot_history` (the caller closes it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    title = run_title(model, dataset)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` as a PNG atomically: rendered into a temporary file in the same folder, then
    renamed over ``path`` (a symbolic link there is replaced, never followed; a crash leaves the old plot)."""
    import os
    import tempfile
    fd, tmp = tempfile.mkstemp(prefix=Path(path).name + ".", suffix=".tmp", dir=Path(path).parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, dpi=100, format="png")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def plot_history(history: list[dict[str, Any]], path: Path, model: str | None = None,
                 dataset: str | None = None) -> Path:
    """Loss and accuracy per epoch (training and validation), side by side, on whole-number epoch ticks,
    titled with ``model`` and ``dataset`` when given (``"mnist-cnn on fashion-mnist"``); writes a PNG."""
    import matplotlib.pyplot as plt
    fig = history_figure(history, model, dataset)
    save_figure(fig, path)
    plt.close(fig)
    return path


def plot_recall(recall: Sequence[float], classes: Sequence[str], path: Path, model: str | None = None,
                dataset: str | None = None) -> Path:
    """Per-class recall as bars, titled with ``model`` and ``dataset`` when given; writes a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar(range(len(recall)), recall, color="tab:blue")
    ax.bar_label(bars, labels=[f"{r:.3f}" for r in recall], fontsize=8)
    ax.set_xticks(range(len(recall)), classes, rotation=30, ha="right")
    title = run_title(model, dataset)
    ax.set(ylim=(0, 1.08), ylabel="recall",
           title=f"{title}: per-class recall (test set)" if title else "per-class recall (test set)")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
