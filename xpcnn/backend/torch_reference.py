"""The same network in native PyTorch: the oracle for tests and the reference for benchmarks."""

from __future__ import annotations

from typing import Any

import torch


def build_torch_model(config: dict[str, Any]) -> torch.nn.Sequential:
    """A ``torch.nn.Sequential`` with the layers of an xpcnn model ``config()`` (same state-dict keys)."""
    nn = torch.nn
    layers = []
    for spec in config["layers"]:
        spec = dict(spec)
        kind = spec.pop("type")
        if kind == "Conv2D":
            layers.append(nn.Conv2d(spec["in_channels"], spec["out_channels"], tuple(spec["kernel_size"]),
                                    stride=tuple(spec["stride"]),
                                    padding=spec["padding"] if isinstance(spec["padding"], (int, str))
                                    else tuple(spec["padding"]),
                                    dilation=tuple(spec["dilation"]), bias=spec["bias"]))
        elif kind in ("MaxPool2D", "AvgPool2D"):
            cls = nn.MaxPool2d if kind == "MaxPool2D" else nn.AvgPool2d
            layers.append(cls(tuple(spec["kernel_size"]), tuple(spec["stride"]), tuple(spec["padding"])))
        elif kind == "Dense":
            layers.append(nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"]))
        elif kind == "BatchNorm2D":
            layers.append(nn.BatchNorm2d(spec["num_features"], eps=spec["eps"], momentum=spec["momentum"]))
        elif kind == "Dropout":
            layers.append(nn.Dropout(spec["p"]))
        elif kind == "LeakyReLU":
            layers.append(nn.LeakyReLU(spec["negative_slope"]))
        else:
            layers.append({"ReLU": nn.ReLU, "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid, "Flatten": nn.Flatten}[kind]())
    return nn.Sequential(*layers)


class TorchTrainStep:
    """One native-PyTorch training step (forward, backward, optimizer) of a model config, for timing."""

    def __init__(self, config: dict[str, Any], state: dict[str, Any], batch_size: int, device: str = "cpu",
                 optimizer: str = "adam", lr: float = 1e-3, seed: int = 0) -> None:
        import numpy as np
        self.device = torch.device(device)
        self.model = build_torch_model(config).to(self.device)
        self.model.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in state.items()}, strict=False)
        params = self.model.parameters()
        self.optimizer = torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr)
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn((batch_size, 1, 28, 28), generator=gen).to(self.device)
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
