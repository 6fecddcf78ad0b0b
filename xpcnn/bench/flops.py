"""FLOP counts from layer shapes (a multiply-add counts as 2 FLOPs; element-wise work is not counted)."""

from __future__ import annotations

from xpcnn.layers import Conv2D, Dense, Layer
from xpcnn.model import Sequential


def layer_flops(model: Sequential, input_shape: tuple[int, ...] = (1, 28, 28)) -> list[dict[str, int]]:
    """Per layer, for one image: ``forward``, ``grad_input`` and ``grad_weight`` FLOPs."""
    shape = (1, *input_shape)
    rows = []
    for i, layer in enumerate(model.layers):
        out = layer.output_shape(shape)
        macs = _macs(layer, shape)
        rows.append({"layer": i, "forward": 2 * macs, "grad_input": 2 * macs if i > 0 else 0,
                     "grad_weight": 2 * macs})
        shape = out
    return rows


def _macs(layer: Layer, shape: tuple[int, ...]) -> int:
    """Multiply-adds of ``layer`` for one input of ``shape``, those of the layers nested in it included."""
    out = layer.output_shape(shape)
    if isinstance(layer, Conv2D):
        return layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1] * out[1] * out[2] * out[3]
    if isinstance(layer, Dense):
        return layer.in_features * layer.out_features
    total, paths = 0, {}
    for key, child in layer.children():  # a residual layer's paths, each from the layer's input
        path = key.split(".")[0]
        total += _macs(child, paths.get(path, shape))
        paths[path] = child.output_shape(paths.get(path, shape))
    return total


def training_flops(model: Sequential, input_shape: tuple[int, ...] = (1, 28, 28)) -> int:
    """FLOPs of one training step per image: forward, weight gradients, and input gradients but the first layer's."""
    return sum(r["forward"] + r["grad_input"] + r["grad_weight"] for r in layer_flops(model, input_shape))


def inference_flops(model: Sequential, input_shape: tuple[int, ...] = (1, 28, 28)) -> int:
    """FLOPs of one forward pass per image."""
    return sum(r["forward"] for r in layer_flops(model, input_shape))
