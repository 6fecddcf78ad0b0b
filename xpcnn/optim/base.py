"""The optimizer protocol: walk a model's parameters, keep per-parameter state, write updates back."""

from __future__ import annotations

from typing import Any

from xpcnn import backend as B
from xpcnn.kernels import step_scope
from xpcnn.model import Sequential


class Optimizer:
    """Base class: subclasses implement :meth:`update` for one parameter."""

    def __init__(self, model: Sequential, lr: float) -> None:
        if not isinstance(model, Sequential):
            raise TypeError(f"{type(self).__name__}: expected an xpcnn Sequential model, got {type(model).__name__}")
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: learning rate must be positive, got {lr!r}")
        self.model = model
        self.lr = float(lr)
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
        for layer in self.model.layers:
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
        """Restore :meth:`state_dict` output; arrays are moved to the model's device."""
        self.step_count = int(state["step"])
        self.lr = float(state["hyperparameters"].get("lr", self.lr))
        placement = self.model.placement
        self.state = {k: {slot: B.move(a, placement) for slot, a in slots.items()}
                      for k, slots in state["state"].items()}
