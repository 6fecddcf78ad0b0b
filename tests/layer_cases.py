"""Layer configurations shared by the finite-difference and PyTorch-oracle tests.

Each case builds an xpcnn layer and the matching PyTorch function, with the input shape to use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from xpcnn import layers as L


@dataclass
class Case:
    id: str
    make: Callable[[], Any]                 # -> xpcnn layer
    torch_fn: Callable[..., Any] | None     # (torch_x, **torch_params) -> torch_y
    input_shape: tuple[int, ...]
    positive_input: bool = False
    scale: float = 1.0                      # inputs are drawn this much wider than the default
    numpy_only: str | None = None           # why the case runs on NumPy's kernels only (a skip reason elsewhere)
    needs_numba: bool = False

    def skip_reason(self, backend_name: str) -> str | None:
        """Why this case cannot run on ``backend_name`` with the current settings, or None."""
        if self.numpy_only is None:
            return None
        if backend_name != "numpy":
            return f"{self.numpy_only} (runs on NumPy only)"
        import xpcnn
        if not xpcnn.settings.current().kernels:
            return f"{self.numpy_only}, and the kernels are switched off in this run"
        from xpcnn.kernels.numpy import compiled
        return None if compiled.available() or not self.needs_numba else "numba is not installed (pip install numba)"


def parameters_of(layer: Any) -> list[tuple[str, Any, str]]:
    """``(key, owning layer, name)`` for each parameter of ``layer`` and of the layers nested in it: ``"weight"``,
    or ``"block.0.weight"`` inside a residual layer (the key of its PyTorch twin's ``named_parameters``)."""
    return [((prefix + "." + name).lstrip("."), owner, name)
            for prefix, owner in layer.named_modules("") for name in owner.params]


def _conv(cin, cout, k, stride=1, padding=0, dilation=1, bias=True, shape=(2, None, 9, 8), lowering="auto"):
    def make():
        return L.Conv2D(cin, cout, k, stride=stride, padding=padding, dilation=dilation, bias=bias, seed=7,
                        lowering=lowering)

    def torch_fn(x, weight, bias=None):
        import torch.nn.functional as F
        return F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)

    name = f"conv-{lowering}-c{cin}o{cout}-k{k}-s{stride}-p{padding}-d{dilation}-b{int(bias)}"
    only = f"the {lowering} lowering is a NumPy kernel" if lowering in ("rows", "tiles", "direct") else None
    return Case(name, make, torch_fn, (shape[0], cin, shape[2], shape[3]), numpy_only=only,
                needs_numba=lowering == "direct")


_CONV_SPECS = [
    {"cin": 1, "cout": 3, "k": 3},
    {"cin": 2, "cout": 4, "k": 3, "bias": False},
    {"cin": 3, "cout": 2, "k": (2, 3)},
    {"cin": 2, "cout": 3, "k": 3, "stride": 2},
    {"cin": 2, "cout": 3, "k": 3, "stride": (2, 1), "padding": 1},
    {"cin": 2, "cout": 2, "k": 3, "padding": (2, 1)},
    {"cin": 2, "cout": 3, "k": 3, "padding": "same"},
    {"cin": 2, "cout": 3, "k": 4, "padding": "same"},
    {"cin": 2, "cout": 3, "k": 3, "padding": "valid"},
    {"cin": 2, "cout": 2, "k": 3, "dilation": 2},
    {"cin": 3, "cout": 2, "k": 2, "stride": 2, "padding": 1, "dilation": (1, 2)},
    {"cin": 1, "cout": 2, "k": 5, "padding": 2, "shape": (3, None, 7, 7)},
    {"cin": 17, "cout": 3, "k": 3, "padding": 1, "shape": (2, None, 6, 5)},  # many channels
    {"cin": 17, "cout": 2, "k": 2, "dilation": 2, "padding": "same", "shape": (2, None, 5, 6)},
]
# Geometries the direct kernels take (stride 1, few channels): output channels above and below a
# vector's 8 lanes and a register block's pixel count, tails of a row, dilation, padding.
_DIRECT_SPECS = [spec for spec in _CONV_SPECS if spec.get("stride", 1) == 1] + [
    {"cin": 1, "cout": 8, "k": 5, "shape": (2, None, 17, 30)},
    {"cin": 3, "cout": 13, "k": 3, "padding": 1, "shape": (2, None, 6, 11)},
    {"cin": 2, "cout": 32, "k": (3, 2), "dilation": (2, 1), "shape": (2, None, 8, 9)},
    {"cin": 9, "cout": 1, "k": 1, "shape": (2, None, 4, 5)},
]
# Every geometry through each lowering of xpcnn.ops.lowering (auto would pick "rows" for all these sizes).
CONV_CASES = ([_conv(**spec, lowering=lowering) for lowering in ("columns", "rows", "tiles") for spec in _CONV_SPECS]
              + [_conv(**spec, lowering="direct") for spec in _DIRECT_SPECS])


def _pool(kind, k, stride=None, padding=0, shape=(2, 3, 8, 7)):
    def make():
        return (L.MaxPool2D if kind == "max" else L.AvgPool2D)(k, stride=stride, padding=padding)

    def torch_fn(x):
        import torch.nn.functional as F
        fn = F.max_pool2d if kind == "max" else F.avg_pool2d
        return fn(x, k, stride=stride, padding=padding)

    return Case(f"{kind}pool-k{k}-s{stride}-p{padding}-{'x'.join(map(str, shape[2:]))}", make, torch_fn, shape)


POOL_CASES = [
    _pool("max", 2), _pool("max", 3, 1), _pool("max", 3, 2, 1), _pool("max", (2, 3), (1, 2)),
    _pool("avg", 2), _pool("avg", 3, 1), _pool("avg", 3, 2, 1), _pool("avg", (3, 2), 2),
    # windows that tile the input exactly take the one-pass paths
    _pool("max", 2, shape=(2, 3, 8, 6)), _pool("avg", 2, shape=(2, 3, 8, 6)), _pool("avg", (2, 3), shape=(2, 3, 6, 9)),
]


def _elementwise(name, make, torch_name, positive=False):
    def torch_fn(x):
        import torch
        import torch.nn.functional as F
        return {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                "leaky": lambda v: F.leaky_relu(v, 0.1), "flatten": lambda v: v.flatten(1),
                "gelu": F.gelu, "gelu-tanh": lambda v: F.gelu(v, approximate="tanh"),
                "global-avg": lambda v: F.adaptive_avg_pool2d(v, 1)}[torch_name](x)
    return Case(name, make, torch_fn, (2, 3, 4, 5), positive)


ELEMENTWISE_CASES = [
    _elementwise("relu", L.ReLU, "relu"),
    _elementwise("leaky-relu", lambda: L.LeakyReLU(0.1), "leaky"),
    _elementwise("tanh", L.Tanh, "tanh"),
    _elementwise("sigmoid", L.Sigmoid, "sigmoid"),
    _elementwise("flatten", L.Flatten, "flatten"),
    _elementwise("gelu", L.GELU, "gelu"),
    _elementwise("gelu-tanh", lambda: L.GELU("tanh"), "gelu-tanh"),
    _elementwise("global-avg-pool", L.GlobalAvgPool2D, "global-avg"),
    Case("gelu-wide-range", L.GELU, lambda x: __import__("torch").nn.functional.gelu(x), (2, 3, 4, 5),
         scale=4.0),  # both tails of the normal CDF (|x| up to ~12) and the branch points of erf at |x/sqrt 2| = 1
]


def _dense(bias):
    def torch_fn(x, weight, bias=None):
        import torch.nn.functional as F
        return F.linear(x, weight, bias)
    return Case(f"dense-b{int(bias)}", lambda: L.Dense(12, 5, bias=bias, seed=3), torch_fn, (4, 12))


def _batchnorm():
    def torch_fn(x, weight, bias):
        import torch
        import torch.nn.functional as F
        c = x.shape[1]
        return F.batch_norm(x, torch.zeros(c, dtype=x.dtype), torch.ones(c, dtype=x.dtype), weight, bias,
                            training=True)

    def make():
        layer = L.BatchNorm2D(3)
        r = np.random.default_rng(5)
        layer.params["weight"] = r.uniform(0.5, 1.5, 3).astype(np.float32)
        layer.params["bias"] = r.uniform(-0.5, 0.5, 3).astype(np.float32)
        return layer
    return Case("batchnorm2d", make, torch_fn, (4, 3, 5, 5))


def _residual(shortcut: bool, name: str, cin: int = 3):
    """A basic ResNet block (conv-BN-ReLU-conv-BN), with an identity or a strided 1x1 conv + BN shortcut.
    With an identity shortcut and 8 or more channels, the NumPy direct kernel of the block's first conv starts
    its input gradient's sums from the shortcut's gradient (with fewer it adds it afterwards)."""
    def make():
        cout, stride = (4, 2) if shortcut else (cin, 1)
        block = [L.Conv2D(cin, cout, 3, stride=stride, padding=1, bias=False, seed=11), _batchnorm_layer(cout, 1),
                 L.ReLU(), L.Conv2D(cout, cout, 3, padding=1, bias=False, seed=12), _batchnorm_layer(cout, 2)]
        side = [L.Conv2D(cin, cout, 1, stride=2, bias=False, seed=13), _batchnorm_layer(cout, 3)] if shortcut else None
        return L.Residual(block, side)

    def torch_fn(x, **params):
        import torch

        from xpcnn.backend.torch_reference import torch_layer
        from xpcnn.model import layer_spec
        module = torch_layer(layer_spec(make())).to(x.dtype)
        return torch.func.functional_call(module, params, (x,))
    return Case(name, make, torch_fn, (3, cin, 6, 5))


def _batchnorm_layer(c: int, seed: int):
    """A BatchNorm2D with scale and shift away from their initial 1 and 0 (so their gradients matter)."""
    layer = L.BatchNorm2D(c)
    r = np.random.default_rng(seed)
    layer.params["weight"] = r.uniform(0.5, 1.5, c).astype(np.float32)
    layer.params["bias"] = r.uniform(-0.5, 0.5, c).astype(np.float32)
    return layer


PARAM_CASES = [_dense(True), _dense(False), _batchnorm(), _residual(False, "residual-identity"),
               _residual(False, "residual-identity-8", cin=8), _residual(True, "residual-projection")]

ALL_CASES = CONV_CASES + POOL_CASES + ELEMENTWISE_CASES + PARAM_CASES
