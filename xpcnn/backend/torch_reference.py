"""The same network in native PyTorch: the oracle for tests and the reference for benchmarks."""

from __future__ import annotations

from typing import Any

import torch


class TorchResidual(torch.nn.Module):
    """``block(x) + shortcut(x)`` with ``block`` and ``shortcut`` ``nn.Sequential`` children (an empty shortcut
    is the identity): the twin of :class:`xpcnn.layers.Residual`, with the same state-dict keys
    (``block.0.weight``, ``shortcut.1.running_mean``)."""

    def __init__(self, block: list[torch.nn.Module], shortcut: list[torch.nn.Module]) -> None:
        super().__init__()
        self.block = torch.nn.Sequential(*block)
        self.shortcut = torch.nn.Sequential(*shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + self.shortcut(x)


def build_torch_model(config: dict[str, Any]) -> torch.nn.Sequential:
    """A ``torch.nn.Sequential`` with the layers of an xpcnn model ``config()`` (same state-dict keys)."""
    return torch.nn.Sequential(*(torch_layer(spec) for spec in config["layers"]))


def torch_layer(spec: dict[str, Any]) -> torch.nn.Module:
    """The PyTorch module of one xpcnn layer spec (``{"type": ..., **config}``)."""
    nn = torch.nn
    spec = dict(spec)
    kind = spec.pop("type")
    if kind == "Conv2D":
        return nn.Conv2d(spec["in_channels"], spec["out_channels"], tuple(spec["kernel_size"]),
                         stride=tuple(spec["stride"]),
                         padding=spec["padding"] if isinstance(spec["padding"], (int, str)) else tuple(spec["padding"]),
                         dilation=tuple(spec["dilation"]), bias=spec["bias"])
    if kind in ("MaxPool2D", "AvgPool2D"):
        cls = nn.MaxPool2d if kind == "MaxPool2D" else nn.AvgPool2d
        return cls(tuple(spec["kernel_size"]), tuple(spec["stride"]), tuple(spec["padding"]))
    if kind == "Dense":
        return nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"])
    if kind == "BatchNorm2D":
        return nn.BatchNorm2d(spec["num_features"], eps=spec["eps"], momentum=spec["momentum"])
    if kind == "Dropout":
        return nn.Dropout(spec["p"])
    if kind == "LeakyReLU":
        return nn.LeakyReLU(spec["negative_slope"])
    if kind == "GELU":
        return nn.GELU(approximate=spec["approximate"])
    if kind == "GlobalAvgPool2D":
        return nn.AdaptiveAvgPool2d(1)
    if kind == "Residual":
        return TorchResidual([torch_layer(s) for s in spec["block"]], [torch_layer(s) for s in spec["shortcut"] or []])
    return {"ReLU": nn.ReLU, "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid, "Flatten": nn.Flatten}[kind]()


class TorchTrainStep:
    """One native-PyTorch training step (forward, backward, optimizer) of a model config, for timing, on fixed
    synthetic data: ``x`` of shape ``(batch_size, *input_shape)`` float32, ``y`` of shape ``(batch_size,)`` int64 in
    [0, 10)."""

    def __init__(self, config: dict[str, Any], state: dict[str, Any], batch_size: int, device: str = "cpu",
                 optimizer: str = "adam", lr: float = 1e-3, seed: int = 0,
                 input_shape: tuple[int, int, int] = (1, 28, 28)) -> None:
        import numpy as np
        self.device = torch.device(device)
        self.model = build_torch_model(config).to(self.device)
        self.model.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in state.items()}, strict=False)
        params = self.model.parameters()
        self.optimizer = torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr)
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn((batch_size, *input_shape), generator=gen).to(self.device)
        self.y = torch.randint(0, 10, (batch_size,), generator=gen).to(self.device)

    def train(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def infer(self) -> None:
        self.model.eval()
        with torch.no_grad():
            self.model(self.x)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_bytes(self) -> int | None:
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None


def torch_version() -> str:
    return torch.__version__
