"""The same network in native PyTorch: the oracle for tests and the reference for benchmarks."""

from __future__ import annotations

from typing import Any

import torch


def build_torch_model(config: dict[str, Any]) -> "torch.nn.Sequential":
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
