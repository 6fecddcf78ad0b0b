"""``Sequential``: a chain of layers with PyTorch-style state dicts and a device switch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xpcnn import backend as B
from xpcnn.errors import CheckpointError, DTypeError, ShapeError
from xpcnn.kernels import step_scope
from xpcnn.layers import LAYER_TYPES, Layer
from xpcnn.plan import FusedStep, LayerStep, build_plan


class Sequential:
    """Layers applied in order: ``forward`` runs them, ``backward`` runs their backward in reverse.

    Parameters are keyed ``"<index>.<name>"`` (``"0.weight"``), exactly as in a PyTorch
    ``nn.Sequential``'s state dict; those of layers nested in a :class:`~xpcnn.layers.Residual` at index 3 are
    keyed ``"3.block.<j>.<name>"`` and ``"3.shortcut.<j>.<name>"``, as in a torch module with ``block`` and
    ``shortcut`` ``nn.Sequential`` children (:meth:`named_modules` lists every layer with its key). The layers
    run as the steps of :attr:`plan` (an activation and the pooling layer after it may run fused;
    :mod:`xpcnn.plan`).

    ``normalization`` is the ``(mean, std)`` the model's inputs were standardized with in training (set by
    :meth:`xpcnn.Trainer.fit`, kept by :meth:`save` and :func:`xpcnn.load`), or None while unknown; each entry
    a number, or a tuple of one number per input channel.
    """

    def __init__(self, layers: list[Layer], name: str | None = None) -> None:
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not an xpcnn layer")
        self.layers = layers
        for key, layer in self.named_modules():
            layer.name = f"layer {key} ({type(layer).__name__})"
        self.name = name
        self.training = True
        self.placement: B.Placement = B.resolve("cpu")
        self.dtype = "float32"
        self.normalization: tuple[Any, Any] | None = None
        self._plan: list[LayerStep | FusedStep] = []
        self._plan_key: tuple[int, ...] = ()

    @property
    def plan(self) -> list[LayerStep | FusedStep]:
        """The steps :meth:`forward` and :meth:`backward` run, built once (again if ``layers`` changes)."""
        key = tuple(map(id, self.layers))
        if key != self._plan_key:
            self._plan, self._plan_key = build_plan(self.layers), key
        return self._plan

    # -- running ----------------------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        """Output of the last layer for input ``x`` (e.g. ``(N, C, H, W)`` -> ``(N, classes)``), of :attr:`dtype`.

        Floating-point input of another dtype (a float64 batch into a float32 model) is cast to the model's
        :attr:`dtype` first, as Keras does, so the gradients, parameters and optimizer slots keep that dtype.
        Integer or boolean input (raw uint8 images) raises :class:`DTypeError`: scale and standardize it first
        (:class:`xpcnn.Trainer` does) or cast it with ``astype(float32)``.
        """
        x = self._as_model_dtype(x, "forward", "input")
        with step_scope(x):
            for step in self.plan:
                x = step.forward(x)
        return x

    __call__ = forward

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        """Backpropagate dL/d_out through every layer, filling each layer's ``grads``; returns dL/d_input.

        ``need_input_grad=False`` lets the first layer skip dL/d_input (a convolution's costs a full
        col2im) and may return None: trainers pass it, as nobody reads the gradient of the data.
        ``grad_out`` of another floating dtype is cast to the model's :attr:`dtype` (as in :meth:`forward`).
        """
        grad_out = self._as_model_dtype(grad_out, "backward", "grad_out")
        steps = self.plan
        with step_scope(grad_out):
            for k in reversed(range(len(steps))):
                grad_out = steps[k].backward(grad_out, need_input_grad or k > 0)
        return grad_out

    def _as_model_dtype(self, x: Any, method: str, what: str) -> Any:
        """``x`` cast to :attr:`dtype` if it is floating-point of another width; DTypeError if not floating."""
        xp = B.namespace_of(x, where=f"Sequential.{method}")
        target = getattr(xp, self.dtype)
        if x.dtype == target:
            return x
        if not xp.isdtype(x.dtype, "real floating"):
            raise DTypeError(f"Sequential.{method}: expected a floating-point {what}, got dtype {x.dtype}; "
                             f"scale and standardize images first (Trainer.fit and Trainer.predict do), or cast "
                             f"with astype({self.dtype})")
        return xp.astype(x, target)

    def train(self) -> Sequential:
        """Training mode: dropout drops, batch norm uses batch statistics."""
        return self._set_training(True)

    def eval(self) -> Sequential:
        """Evaluation mode: dropout is the identity, batch norm uses running statistics."""
        return self._set_training(False)

    def _set_training(self, flag: bool) -> Sequential:
        self.training = flag
        for layer in self.modules():
            layer.training = flag
        return self

    # -- layers and parameters --------------------------------------------------------------
    def named_modules(self) -> list[tuple[str, Layer]]:
        """``(key, layer)`` for every layer, nested ones included (depth first, each after the layer holding
        it), keyed as in PyTorch: ``"3"``, ``"3.block.0"``, ``"3.shortcut.1"``."""
        return [pair for i, layer in enumerate(self.layers) for pair in layer.named_modules(str(i))]

    def modules(self) -> list[Layer]:
        """Every layer, nested ones included, in :meth:`named_modules` order."""
        return [layer for _, layer in self.named_modules()]

    def named_parameters(self) -> Iterator[tuple[str, Layer, str]]:
        """``(key, layer, name)`` for each parameter, in state-dict order; ``layer`` is the (possibly nested)
        layer that holds it, ``layer.params[name]`` the array."""
        for prefix, layer in self.named_modules():
            for name in layer.params:
                yield f"{prefix}.{name}", layer, name

    def parameters(self) -> list[Any]:
        """Every parameter array, in state-dict order."""
        return [layer.params[name] for _, layer, name in self.named_parameters()]

    def num_parameters(self) -> int:
        """Total count of trainable values."""
        return sum(_size(p) for p in self.parameters())

    def state_dict(self) -> dict[str, Any]:
        """Parameters and buffers keyed ``"<index>.<name>"`` (``"<index>.block.<j>.<name>"`` inside a residual
        layer; arrays on the model's device)."""
        state = {}
        for prefix, layer in self.named_modules():
            for name, value in {**layer.params, **layer.buffers}.items():
                state[f"{prefix}.{name}"] = value
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Copy arrays from ``state`` (any backend, e.g. a PyTorch state dict) into this model.

        Raises :class:`CheckpointError` naming every missing, unexpected or mis-shaped tensor.
        """
        own = self.state_dict()
        given = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        wrong = [f"{k}: model has {tuple(own[k].shape)}, state has {tuple(given[k].shape)}"
                 for k in own if k in given and tuple(own[k].shape) != tuple(given[k].shape)]
        problems = []
        if missing and strict:
            problems.append("missing " + ", ".join(missing))
        if unexpected and strict:
            problems.append("unexpected " + ", ".join(unexpected))
        if wrong:
            problems.append("shape mismatch " + "; ".join(wrong))
        if problems:
            raise CheckpointError("state dict does not fit this model: " + " | ".join(problems)
                                  + "; was it saved from another architecture?")
        for prefix, layer in self.named_modules():
            for store in (layer.params, layer.buffers):
                for name in store:
                    key = f"{prefix}.{name}"
                    if key in given:
                        value = B.move(given[key], self.placement)
                        store[name] = self.placement.xp.astype(value, store[name].dtype)

    # -- placement --------------------------------------------------------------------------
    def to(self, device: Any = "cpu", backend: str | None = None, dtype: str | None = None) -> Sequential:
        """Move every parameter and buffer to ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a
        backend's device object) on ``backend`` (default: numpy for cpu, cupy for cuda), optionally
        casting to ``dtype`` (``"float32"`` or ``"float64"``). Returns the model.
        """
        placement = B.resolve(device, backend)
        if dtype is not None and dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        B.check_dtype(placement.backend, dtype or self.dtype)
        self.dtype = dtype or self.dtype
        target_dtype = getattr(placement.xp, self.dtype)
        for layer in self.modules():
            for store in (layer.params, layer.buffers):
                for name, value in store.items():
                    store[name] = placement.xp.astype(B.move(value, placement), target_dtype)
            layer.grads = {}
            layer.placement = placement
        self.placement = placement
        return self

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole model to ``path``: architecture, weights (and buffers), dtype, name and
        :attr:`normalization`, for :func:`xpcnn.load` to rebuild in one call.

        The file is a checkpoint without optimizer state (the ``.npz`` archive of plain arrays plus a JSON
        header of :mod:`xpcnn.checkpoint`: loading it never runs code), written exactly at ``path`` (name it
        ``*.npz``) atomically: a crash leaves the previous file or the new one, never a torn one. Returns the path.
        Raises :class:`CheckpointError` (writing nothing) if a weight holds NaN or an infinity.
        """
        from xpcnn.checkpoint import save_model
        return save_model(path, self)

    # -- description ------------------------------------------------------------------------
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the output for ``input_shape`` (batch axis included); checks every layer fits."""
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def summary(self, input_shape: tuple[int, ...] = (1, 28, 28)) -> str:
        """A table of layer, output shape and parameter count for one ``(C, H, W)`` input.

        A layer holding others (a residual block) shows its output and all its parameters on its own row, then
        one indented row per nested layer (keyed as in the state dict: ``3.block.0``), with the shapes inside
        its path."""
        shape = (1, *input_shape) if len(input_shape) == 3 else tuple(input_shape)
        rows = [("#", "layer", "output shape", "params")]
        for i, layer in enumerate(self.layers):
            try:
                rows += _summary_rows(str(i), layer, shape, 0)
                shape = layer.output_shape(shape)
            except ShapeError as exc:
                raise ShapeError(f"summary: {exc}") from None
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"total parameters: {self.num_parameters():,}  ({self.placement}, {self.dtype})")
        return "\n".join(lines)

    def config(self) -> dict[str, Any]:
        """JSON-ready description that :meth:`from_config` rebuilds the architecture from."""
        return {"name": self.name, "layers": [layer_spec(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        """Rebuild a model (fresh weights) from :meth:`config` output.

        Raises :class:`CheckpointError` naming the layer (``model_config.layers[2] (Conv2D): ...``) for an unknown
        layer type or keywords its constructor refuses, and :class:`~xpcnn.errors.ResourceError` for a parameter
        larger than this machine's memory (before allocating it)."""
        layers = [layer_from_spec(spec, f"model_config.layers[{i}]") for i, spec in enumerate(config["layers"])]
        return cls(layers, name=config.get("name"))

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n])"


def layer_spec(layer: Layer) -> dict[str, Any]:
    """``{"type": <class name>, **layer.config()}``: a layer's JSON-ready description (nested layers nest)."""
    return {"type": type(layer).__name__, **layer.config()}


def layer_from_spec(spec: dict[str, Any], field: str) -> Layer:
    """The layer (fresh weights) that :func:`layer_spec` described. A keyword whose value is a list of layer
    specs (a residual layer's ``block`` and ``shortcut``) is built into a list of layers first.

    Raises :class:`CheckpointError` naming ``field`` (``model_config.layers[3].block[1] (Conv2D): ...``) for an
    unknown layer type or keywords its constructor refuses."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in LAYER_TYPES:
        raise CheckpointError(f"{field}: unknown layer type {kind!r}; xpcnn knows {', '.join(sorted(LAYER_TYPES))}")
    for key, value in spec.items():
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            spec[key] = [layer_from_spec(item, f"{field}.{key}[{j}]") for j, item in enumerate(value)]
    try:
        return LAYER_TYPES[kind](**spec)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{field} ({kind}): {exc}") from None


def _summary_rows(key: str, layer: Layer, shape: tuple[int, ...], depth: int) -> list[tuple[str, str, str, str]]:
    """:meth:`Sequential.summary`'s rows for ``layer`` (keyed ``key``) given its input ``shape``, nested rows
    after it, indented by ``depth``."""
    count = sum(_size(p) for _, nested in layer.named_modules(key) for p in nested.params.values())
    out = layer.output_shape(shape)
    rows = [("  " * depth + key, "  " * depth + layer.describe(), "(N, " + ", ".join(map(str, out[1:])) + ")",
             f"{count:,}")]
    paths: dict[str, tuple[int, ...]] = {}
    for child_key, child in layer.children():
        path = child_key.split(".")[0]
        rows += _summary_rows(f"{key}.{child_key}", child, paths.get(path, shape), depth + 1)
        paths[path] = child.output_shape(paths.get(path, shape))
    return rows


def _size(array: Any) -> int:
    count = 1
    for d in array.shape:
        count *= d
    return count
