"""How :class:`~xpcnn.model.Sequential` runs its layers: a plan of steps, built once from the layer list.

Most steps are one layer. An activation directly followed by a pooling layer of :data:`FUSIONS`
becomes one fused step (:mod:`xpcnn.ops.fused`): the same values and gradients as the two layers
apart, with fewer passes over memory (measured on NumPy: ReLU + max-pool, tanh + average pool,
bench/results/optimization-log.md). A layer of :data:`RELU_FOLDS` directly followed by a ReLU becomes a
:class:`ReLUFoldStep`: the layer applies the ReLU in its own output pass and masks the gradient in its
backward pass (``forward(x, relu=True)``: a BatchNorm2D in its compiled passes). Folding the ReLU after a
residual block into the sum of its two paths measured no faster (bench/results/optimization-log.md).
``forward``, ``backward`` and the benchmark's per-layer breakdown all walk the same plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xpcnn.layers import AvgPool2D, BatchNorm2D, Layer, MaxPool2D, ReLU, Tanh
from xpcnn.ops import fused


@dataclass(frozen=True)
class Fusion:
    """An ``activation`` layer type followed by a ``pool`` layer type, run as the op pair
    ``forward(x, kernel, stride, padding) -> (y, ctx)`` / ``backward(grad_y, ctx) -> grad_x``."""

    activation: type[Layer]
    pool: type[Layer]
    forward: Callable[..., tuple[Any, Any]]
    backward: Callable[[Any, Any], Any]


FUSIONS = (
    Fusion(ReLU, MaxPool2D, fused.relu_max_pool2d_forward, fused.relu_max_pool2d_backward),
    Fusion(Tanh, AvgPool2D, fused.tanh_avg_pool2d_forward, fused.tanh_avg_pool2d_backward),
)


class LayerStep:
    """One layer run on its own."""

    def __init__(self, index: int, layer: Layer) -> None:
        self.indices, self.layer = (index,), layer

    def forward(self, x: Any) -> Any:
        return self.layer.forward(x)

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        return self.layer.backward(grad_out, need_input_grad)

    def __repr__(self) -> str:
        return f"{self.indices[0]}: {self.layer.name}"


class FusedStep:
    """Layers ``index`` (an activation) and ``index + 1`` (a pooling layer) run as one op pair. The two
    layers keep no cache of their own: this step holds the pair's context."""

    def __init__(self, index: int, activation: Layer, pool: Any, fusion: Fusion) -> None:
        self.indices, self.activation, self.pool, self.fusion = (index, index + 1), activation, pool, fusion
        self._ctx: Any = None

    def forward(self, x: Any) -> Any:
        self.pool.check_input(x)
        y, self._ctx = self.fusion.forward(x, self.pool.kernel_size, self.pool.stride, self.pool.padding)
        return y

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        if self._ctx is None:
            raise RuntimeError(f"layers {self.indices[0]}-{self.indices[1]}: backward() called before forward(); "
                               "run forward first")
        return self.fusion.backward(grad_out, self._ctx)

    def __repr__(self) -> str:
        return f"{self.indices[0]}-{self.indices[1]}: {self.activation.name} fused into {self.pool.name}"


#: Layer types whose ``forward(x, relu=True)`` returns ``max(forward(x), 0)`` and whose ``backward`` then
#: includes ReLU's gradient.
RELU_FOLDS = (BatchNorm2D,)


class ReLUFoldStep:
    """Layers ``index`` (one of :data:`RELU_FOLDS`) and ``index + 1`` (a ReLU) run as the first with the
    ReLU folded in; the first layer holds the context and fills its gradients, the ReLU layer keeps no cache."""

    def __init__(self, index: int, layer: Layer, relu: ReLU) -> None:
        self.indices, self.layer, self.relu = (index, index + 1), layer, relu

    def forward(self, x: Any) -> Any:
        return self.layer.forward(x, relu=True)

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        return self.layer.backward(grad_out, need_input_grad)

    def __repr__(self) -> str:
        return f"{self.indices[0]}-{self.indices[1]}: {self.relu.name} folded into {self.layer.name}"


Step = LayerStep | FusedStep | ReLUFoldStep


def build_plan(layers: list[Layer]) -> list[Step]:
    """The steps that run ``layers`` in order, each eligible (activation, pool) pair fused and each ReLU after a
    layer of :data:`RELU_FOLDS` folded into it."""
    steps: list[Step] = []
    i = 0
    while i < len(layers):
        pair = (type(layers[i]), type(layers[i + 1])) if i + 1 < len(layers) else None
        fusion = next((f for f in FUSIONS if pair == (f.activation, f.pool)), None)
        if pair is not None and pair[0] in RELU_FOLDS and pair[1] is ReLU:
            steps.append(ReLUFoldStep(i, layers[i], layers[i + 1]))
            i += 2
        elif fusion is not None:
            steps.append(FusedStep(i, layers[i], layers[i + 1], fusion))
            i += 2
        else:
            steps.append(LayerStep(i, layers[i]))
            i += 1
    return steps
