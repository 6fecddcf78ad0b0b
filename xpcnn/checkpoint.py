"""One-file checkpoints: weights, optimizer state, progress, RNG state, model config, xpcnn version.

The file is an ``.npz`` archive of plain numeric arrays plus a JSON header, loaded with
``allow_pickle=False``: opening a checkpoint can never run code. Writes are atomic (temporary
file, fsync, rename), so a crash at any moment leaves the previous checkpoint intact.
A whole model saved alone (:meth:`Sequential.save`, :func:`save_model`) is the same format without
optimizer state; :func:`load_model` (``xpcnn.load``) reads both.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xpcnn import backend as B
from xpcnn.backend import host
from xpcnn.checkpoint_schema import validate_arrays, validate_header
from xpcnn.data.normalization import checked as normalization_checked
from xpcnn.data.normalization import to_json as normalization_to_json
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
    path: Path | None = None

    def build_model(self) -> Sequential:
        """A fresh model of the saved architecture holding the saved weights (NumPy, CPU), in the saved dtype,
        with its name and ``normalization``. Raises :class:`CheckpointError` (naming the file) if the header
        or the arrays do not describe a model."""
        where = f"{self.path}: " if self.path is not None else ""
        config = self.meta.get("model_config")
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise CheckpointError(f"{where}the file holds no model description (model_config)")
        try:
            model = Sequential.from_config(config)
        except CheckpointError as exc:
            raise CheckpointError(f"{where}{exc}") from None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"{where}its model description cannot be built ({type(exc).__name__}: {exc})"
                                  ) from None
        if self.meta.get("model_dtype") == "float64":
            model.to("cpu", dtype="float64")
        try:
            model.load_state_dict(self.model_state)
        except CheckpointError as exc:
            raise CheckpointError(f"{where}{exc}") from None
        trainer = self.meta.get("trainer")
        normalization = self.meta.get("normalization") or (trainer.get("normalization")
                                                            if isinstance(trainer, dict) else None)
        if isinstance(normalization, list) and len(normalization) == 2:  # validated by the schema
            model.normalization = normalization_checked(normalization)
        return model


def save_checkpoint(path: str | os.PathLike, model: Sequential, optimizer: Any = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (and ``optimizer``) plus ``meta`` to ``path`` atomically; returns the path.

    A checkpoint never holds NaN or infinite weights: if a parameter, buffer or optimizer slot does (the
    training diverged), nothing is written (a file already at ``path`` stays as it was) and
    :class:`CheckpointError` names the array. Non-finite floats in ``meta`` are written as ``null``.
    """
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
    _check_finite(path, arrays)
    host.save_arrays(path, arrays, header)
    return Path(path)


def _check_finite(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """Raise :class:`CheckpointError` naming the first array of ``arrays`` (host arrays keyed ``model:KEY`` or
    ``optim:KEY:SLOT``) that holds NaN or an infinity."""
    xp = host.xp
    for name, value in arrays.items():
        if xp.isdtype(value.dtype, "real floating") and not bool(xp.all(xp.isfinite(value))):
            what = (f"optimizer slot {name[len('optim:'):]}" if name.startswith("optim:")
                    else f"weight {name.removeprefix('model:')}")
            raise CheckpointError(f"not writing {path}: {what} holds NaN or infinite values (the training "
                                  "diverged); lower the learning rate and train again")


def save_model(path: str | os.PathLike, model: Sequential) -> Path:
    """Write ``model`` alone (architecture, weights, dtype, name, normalization; no optimizer) to ``path``
    atomically, as :meth:`Sequential.save` does; returns the path."""
    meta: dict[str, Any] = {"kind": "model"}
    if getattr(model, "normalization", None) is not None:
        meta["normalization"] = normalization_to_json(normalization_checked(model.normalization))
    return save_checkpoint(path, model, meta=meta)


def load_model(path: str | os.PathLike, device: Any = "cpu", backend: str | None = None) -> Sequential:
    """``xpcnn.load``: the model in ``path``, saved by :meth:`Sequential.save` or a training checkpoint
    (``last.npz``, ``best.npz``), rebuilt with its weights, dtype, name and normalization, on ``device`` and
    ``backend`` (default: NumPy on the CPU). Reading never runs code (``allow_pickle=False``).

    Raises :class:`CheckpointError`, in one line naming the file, if it is missing, not an xpcnn file,
    corrupt or holds no usable model.
    """
    model = load_checkpoint(path).build_model()
    if device != "cpu" or backend is not None:
        model.to(device, backend)
    return model


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` in one line naming the file (and the header field or array, see
    :mod:`xpcnn.checkpoint_schema`) if it is missing, not an xpcnn checkpoint, written by a newer xpcnn, has a
    header field of the wrong shape, an array that is not real floats, or an array larger than the file holds.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file (such as {path / 'best.npz'})")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        arrays, meta = host.load_arrays(path)
    except (ValueError, UnicodeDecodeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path} is not a readable xpcnn checkpoint: {exc}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    if isinstance(meta, dict) and meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an xpcnn checkpoint (format {meta.get('format')!r})")
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer xpcnn ({meta.get('xpcnn_version')}); upgrade xpcnn")
    validate_header(meta, path)  # every known field the right shape: one line naming the field otherwise
    model_state, slots = {}, {}
    for name, value in arrays.items():
        section, _, rest = name.partition(":")
        if section == "model":
            model_state[rest] = value
        elif section == "optim":
            key, _, slot = rest.rpartition(":")
            slots.setdefault(key, {})[slot] = value
    validate_arrays(model_state, slots, path)
    return Checkpoint(model_state, slots, meta, path)
