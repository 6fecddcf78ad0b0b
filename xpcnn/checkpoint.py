"""One-file checkpoints: weights, optimizer state, progress, RNG state, model config, xpcnn version.

The file is an ``.npz`` archive of plain numeric arrays plus a JSON header, loaded with
``allow_pickle=False``: opening a checkpoint can never run code. Writes are atomic (temporary
file, fsync, rename), so a crash at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xpcnn import backend as B
from xpcnn.backend import host
from xpcnn.errors import CheckpointError
from xpcnn.model import Sequential

FORMAT = "xpcnn-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: host arrays by section, and the JSON metadata."""

    model_state: dict[str, Any]
    optimizer_slots: dict[str, dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> Sequential:
        """A fresh model of the saved architecture holding the saved weights (NumPy, CPU)."""
        model = Sequential.from_config(self.meta["model_config"])
        if self.meta.get("model_dtype") == "float64":
            model.to("cpu", dtype="float64")
        model.load_state_dict(self.model_state)
        return model


def save_checkpoint(path: str | os.PathLike, model: Sequential, optimizer: Any = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (and ``optimizer``) plus ``meta`` to ``path`` atomically; returns the path."""
    from xpcnn import __version__
    arrays = {f"model:{k}": B.to_numpy(v) for k, v in model.state_dict().items()}
    header: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "xpcnn_version": __version__,
                              "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "model_config": model.config(), "model_dtype": model.dtype}
    if optimizer is not None:
        state = optimizer.state_dict()
        header["optimizer"] = {"type": type(optimizer).__name__, "step": state["step"],
                               "hyperparameters": state["hyperparameters"]}
        for key, slots in state["state"].items():
            for slot, value in slots.items():
                arrays[f"optim:{key}:{slot}"] = B.to_numpy(value)
    header.update(meta or {})
    host.save_arrays(path, arrays, header)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; raises :class:`CheckpointError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        arrays, meta = host.load_arrays(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable xpcnn checkpoint: {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an xpcnn checkpoint (format {meta.get('format')!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer xpcnn ({meta.get('xpcnn_version')}); upgrade xpcnn")
    model_state, slots = {}, {}
    for name, value in arrays.items():
        section, _, rest = name.partition(":")
        if section == "model":
            model_state[rest] = value
        elif section == "optim":
            key, _, slot = rest.rpartition(":")
            slots.setdefault(key, {})[slot] = value
    return Checkpoint(model_state, slots, meta)
