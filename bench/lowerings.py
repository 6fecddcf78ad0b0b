"""Each convolution lowering timed on the presets' conv layers (NumPy, float32): what "auto" should pick.

For every conv of every preset, forward + backward (with the input gradient where the network needs
it) under ``columns``, ``rows``, ``tiles`` of several widths and, where its kernels can run (numba),
``direct``, interleaved in one process, median of repeats; the lowering "auto" picks is marked.
Import xpcnn first (it sets OpenBLAS's short spin).

    python bench/lowerings.py --batch-size 128 --tiles 2 4 5 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import xpcnn  # noqa: F401  # isort: skip  (before NumPy: OpenBLAS's short idle spin)
import numpy as np  # isort: skip

from xpcnn import backend as B
from xpcnn import layers as L
from xpcnn.cli.common import positive_int
from xpcnn.models import PRESETS, build
from xpcnn.kernels.numpy import conv, direct
from xpcnn.kernels.numpy.lowering import choose_lowering


def preset_convs() -> list[tuple[str, L.Conv2D, tuple[int, int, int], bool]]:
    """(label, layer, input (C, H, W), needs input gradient) for each preset's conv layers."""
    found = []
    for name in PRESETS:
        model = build(name)
        shape = (1, 1, 28, 28)
        for index, layer in enumerate(model.layers):
            if isinstance(layer, L.Conv2D):
                found.append((f"{name}[{index}]", layer, shape[1:], index > 0))
            shape = layer.output_shape(shape)
    return found


def time_lowering(layer: L.Conv2D, x: np.ndarray, kind: str, tile: int | None, need_input_grad: bool,
                  repeats: int) -> float:
    """Median ms of forward + backward with the conv forced to ``kind`` (and ``tile``)."""
    def plan(*args, **kwargs):
        return choose_lowering(*args[:5], kind, tile=tile)
    original, conv.choose_lowering = conv.choose_lowering, plan
    try:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            y, ctx = conv.conv2d_forward(x, layer.params["weight"], layer.params.get("bias"), layer.stride,
                                         layer.padding, layer.dilation, kind)
            ctx.backward(np.ones_like(y), need_input_grad)
            times.append(time.perf_counter() - start)
    finally:
        conv.choose_lowering = original
    return statistics.median(times[2:]) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--tiles", type=positive_int, nargs="*", default=[2, 4, 5, 8], help="tile widths to try")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    for label, layer, (c, h, w), need_input_grad in preset_convs():
        # Channel-last storage behind an (N, C, H, W) view, as a previous layer leaves it.
        x = np.transpose(rng.standard_normal((args.batch_size, h, w, c), dtype=np.float32), (0, 3, 1, 2))
        padded = (args.batch_size, h + sum(layer.padding[:2]), w + sum(layer.padding[2:]), c)
        y_hw = layer.output_shape(x.shape)[2:]
        auto = choose_lowering(padded, tuple(layer.params["weight"].shape), layer.stride, layer.dilation, y_hw)
        variants = [("columns", None), ("rows", None)] + [("tiles", t) for t in args.tiles]
        direct = direct.supports(x, tuple(layer.params["weight"].shape), layer.stride) is None
        if direct:
            variants.append(("direct", None))
        ms = {f"{kind}{tile or ''}": time_lowering(layer, x, kind, tile, need_input_grad, args.repeats)
              for kind, tile in variants}
        picked = "direct" if direct else auto.kind + (str(auto.tile) if auto.kind == "tiles" else "")
        cells = "  ".join(f"{key}{'*' if key == picked else ''} {value:.2f}" for key, value in ms.items())
        print(f"{label:12s} {c}->{layer.out_channels} {layer.kernel_size[0]}x{layer.kernel_size[1]} on {h}x{w}: "
              f"{cells} ms", flush=True)


if __name__ == "__main__":
    main()
