"""The optimizer protocol: walk a model's parameters, keep per-parameter state, write updates back."""

from __future__ import annotations

import math
from typing import Any

from xpcnn import backend as B
from xpcnn.kernels import step_scope
from xpcnn.model import Sequential


def checked(owner: str, what: str, value: Any, low: float, high: float = math.inf, low_ok: bool = True,
            high_ok: bool = False) -> float:
    """``value`` as a float after checking it is a finite number in the range from ``low`` to ``high``
    (``low_ok``/``high_ok``: whether the ends themselves are allowed).

    Raises ValueError in PyTorch's words plus the rule, e.g. ``SGD: Invalid learning rate: nan (must be a
    finite number > 0)``.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    above = number >= low if low_ok else number > low
    below = number <= high if high_ok else number < high
    if not (math.isfinite(number) and above and below):
        rule = f"{'>=' if low_ok else '>'} {low:g}" + ("" if high == math.inf else
                                                       f" and {'<=' if high_ok else '<'} {high:g}")
        raise ValueError(f"{owner}: Invalid {what}: {value!r} (must be a finite number {rule})")
    return number


class Optimizer:
    """Base class: subclasses implement :meth:`update` for one parameter.

    Raises ValueError naming the argument for a learning rate that is not a finite number > 0.
    """

    def __init__(self, model: Sequential, lr: float) -> None:
        if not isinstance(model, Sequential):
            raise TypeError(f"{type(self).__name__}: expected an xpcnn Sequential model, got {type(model).__name__}")
        self.model = model
        self.lr = checked(type(self).__name__, "learning rate", lr, 0.0, low_ok=False)
        self.step_count = 0
        self.state: dict[str, dict[str, Any]] = {}

    def step(self) -> None:
        """Apply one update to every parameter that has a gradient."""
        self.step_count += 1
        params = self.model.parameters()
        with step_scope(params[0] if params else None):
            for key, layer, name in self.model.named_parameters():
                grad = layer.grads.get(name)
                if grad is None:
                    continue
                layer.params[name] = self.update(key, layer.params[name], grad, self.state.setdefault(key, {}))

    def zero_grad(self) -> None:
        """Drop stored gradients (backward overwrites them anyway; this frees memory)."""
        for layer in self.model.modules():
            layer.grads = {}

    def update(self, key: str, param: Any, grad: Any, state: dict[str, Any]) -> Any:
        """Return the updated ``param``; may keep arrays in ``state``."""
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        """JSON-ready hyper-parameters (learning rate included)."""
        return {"lr": self.lr}

    def state_dict(self) -> dict[str, Any]:
        """``{"step": int, "hyperparameters": {...}, "state": {param_key: {slot: array}}}``."""
        return {"step": self.step_count, "hyperparameters": self.hyperparameters(),
                "state": {k: dict(v) for k, v in self.state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; arrays are moved to the model's device.

        Raises ValueError for a learning rate that is not a finite number >= 0 (a schedule may have reached 0).
        """
        self.step_count = int(state["step"])
        self.lr = checked(type(self).__name__, "learning rate", state["hyperparameters"].get("lr", self.lr), 0.0)
        placement = self.model.placement
        self.state = {k: {slot: B.move(a, placement) for slot, a in slots.items()}
                      for k, slots in state["state"].items()}
