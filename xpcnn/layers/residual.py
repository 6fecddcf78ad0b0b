"""``Residual``: ``block(x) + shortcut(x)``, the building block of ResNets (He et al. 2016).

The two paths are lists of layers. Their parameters and buffers nest under the residual layer's key as in a
PyTorch module with ``block`` and ``shortcut`` ``nn.Sequential`` children: layer 3's
``block.0.weight`` is ``3.block.0.weight`` in the model's state dict, exactly as in a ``torch.nn.Sequential``
whose item 3 is such a module (an identity shortcut has no keys; :mod:`xpcnn.backend.torch_reference` builds
the twin).
"""

from __future__ import annotations

from typing import Any

from xpcnn.errors import ShapeError
from xpcnn.layers.base import Layer
from xpcnn.ops.arithmetic import accumulate


def _layer_list(value: Any, label: str) -> list[Layer]:
    """``value`` (a list of layers, or anything with a ``layers`` list, such as a Sequential) as a list."""
    layers = list(getattr(value, "layers", value))
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"Residual: {label}[{i}] is a {type(layer).__name__}, not an xpcnn layer")
    return layers


class Residual(Layer):
    """``y = block(x) + shortcut(x)`` over any input the two paths map to the same shape.

    Arguments:
        block: the layers of the main path (a list, or a :class:`~xpcnn.Sequential` whose layers are taken),
            e.g. ``[Conv2D(16, 16, 3, padding=1, bias=False), BatchNorm2D(16), ReLU(), Conv2D(16, 16, 3,
            padding=1, bias=False), BatchNorm2D(16)]``.
        shortcut: None for the identity, or the layers of the shortcut path, e.g. a strided 1x1 convolution with
            batch norm, ``[Conv2D(16, 32, 1, stride=2, bias=False), BatchNorm2D(32)]``.

    The activation after the sum is a layer of its own (``Residual(...), ReLU()``: the ResNet paper's v1 block).
    ``backward`` returns the sum of both paths' input gradients. Parameters, gradients and buffers stay in the
    nested layers (:meth:`children`); the model keys them ``"<index>.block.<j>.<name>"`` and
    ``"<index>.shortcut.<j>.<name>"``. Setting ``training`` sets it on every nested layer.

    Raises ValueError for an empty ``block``, TypeError for an item that is not a layer, and
    :class:`~xpcnn.errors.ShapeError` when the two paths' outputs differ in shape.
    """

    def __init__(self, block: Any, shortcut: Any = None) -> None:
        self.block = _layer_list(block, "block")
        self.shortcut = [] if shortcut is None else _layer_list(shortcut, "shortcut")
        if not self.block:
            raise ValueError("Residual: block must hold at least one layer")
        self._plans: dict[str, tuple[tuple[int, ...], list[Any]]] = {}
        super().__init__()

    @property
    def training(self) -> bool:
        return self._training

    @training.setter
    def training(self, flag: bool) -> None:
        self._training = flag
        for _, layer in self.children():
            layer.training = flag

    def children(self) -> list[tuple[str, Layer]]:
        return ([(f"block.{j}", layer) for j, layer in enumerate(self.block)]
                + [(f"shortcut.{j}", layer) for j, layer in enumerate(self.shortcut)])

    def config(self) -> dict[str, Any]:
        def specs(layers: list[Layer]) -> list[dict[str, Any]]:
            return [{"type": type(layer).__name__, **layer.config()} for layer in layers]
        return {"block": specs(self.block), "shortcut": specs(self.shortcut) if self.shortcut else None}

    def describe(self) -> str:
        shortcut = "+".join(type(layer).__name__ for layer in self.shortcut) or "identity"
        return f"Residual(shortcut={shortcut})"

    def __repr__(self) -> str:
        block = ", ".join(map(repr, self.block))
        shortcut = "None" if not self.shortcut else "[" + ", ".join(map(repr, self.shortcut)) + "]"
        return f"Residual(block=[{block}], shortcut={shortcut})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        main, short = tuple(input_shape), tuple(input_shape)
        for layer in self.block:
            main = layer.output_shape(main)
        for layer in self.shortcut:
            short = layer.output_shape(short)
        if main != short:
            raise ShapeError(f"{self.name}: the block maps {tuple(input_shape)} to {main} but the shortcut to "
                             f"{short}; make the shortcut match (a strided 1x1 Conv2D to the block's channels)")
        return main

    def _steps(self, path: str) -> list[Any]:
        """The plan (:func:`xpcnn.plan.build_plan`) of the ``"block"`` or ``"shortcut"`` path, built once (again
        if the list changes): a BatchNorm2D and the ReLU after it run fused, as in a model."""
        from xpcnn.plan import build_plan  # here, not at the top: xpcnn.plan imports xpcnn.layers
        layers = self.block if path == "block" else self.shortcut
        key = tuple(map(id, layers))
        cached = self._plans.get(path)
        if cached is None or cached[0] != key:
            cached = self._plans[path] = (key, build_plan(layers))
        return cached[1]

    def forward(self, x: Any) -> Any:
        main = x
        for step in self._steps("block"):
            main = step.forward(main)
        short = x
        for step in self._steps("shortcut"):
            short = step.forward(short)
        if tuple(main.shape) != tuple(short.shape):
            self.output_shape(tuple(x.shape))  # raises the ShapeError naming both paths
        return main + short

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        grad_short = _backward_path(self._steps("shortcut"), grad_out, need_input_grad)
        if not need_input_grad:
            _backward_path(self._steps("block"), grad_out, False)
            return None
        return _backward_path(self._steps("block"), grad_out, True, add_to=grad_short, protected=grad_out)


def _backward_path(steps: list[Any], grad: Any, need_input_grad: bool, add_to: Any | None = None,
                   protected: Any | None = None) -> Any:
    """dL/d_input of a path of plan ``steps`` given dL/d_output (the first may skip its input gradient), plus
    ``add_to`` when given: added by the first layer where it can (a Conv2D's kernels add it as they compute),
    else afterwards, in place where the path's result is an array of its own (sharing memory with neither
    ``add_to`` nor ``protected``, the gradient the caller was handed)."""
    from xpcnn.plan import LayerStep  # here, not at the top: xpcnn.plan imports xpcnn.layers
    if not steps:  # an identity shortcut
        return grad if add_to is None else accumulate(grad, add_to, protected=protected)
    for k in reversed(range(1, len(steps))):
        grad = steps[k].backward(grad, True)
    first = steps[0]
    if add_to is None:
        return first.backward(grad, need_input_grad)
    if isinstance(first, LayerStep) and getattr(first.layer, "adds_input_grad", False):
        return first.layer.backward(grad, True, add_to=add_to)
    return accumulate(first.backward(grad, True), add_to, protected=protected)
