"""A/B of two xpcnn variants: training images/s of the same preset, interleaved in one process.

A variant is a setting of ``xpcnn.settings`` in force for each call (``--set kernels=True kernels=False``,
``--set column_buffer_bytes=2097152 column_buffer_bytes=4194304``) or a convolution lowering forced on
every Conv2D (``--lowering auto columns``). Each timed block follows the harness's settle time, as in
``xpcnn bench``; the figure is the median of repeats.

    python bench/ab.py --models mnist-cnn seed-deep --batch-sizes 32 128 --set kernels=True kernels=False
"""

from __future__ import annotations

import argparse
import ast
import statistics
from collections.abc import Callable

import xpcnn
from xpcnn import backend as B
from xpcnn.bench.harness import XpcnnStep, _time
from xpcnn.layers import Conv2D


def variant(step: XpcnnStep, lowering: str | None, setting: str | None = None) -> Callable[[], None]:
    """``step.train`` under ``setting`` (``NAME=LITERAL`` of ``xpcnn.settings``), or with its convs forced
    to ``lowering``."""
    if setting is not None:
        name, literal = setting.split("=", 1)
        value = ast.literal_eval(literal)

        def run_with_setting() -> None:
            with xpcnn.settings(**{name: value}):
                step.train()
        with xpcnn.settings(**{name: value}):  # an unknown name or bad value fails here, before any timing
            pass
        return run_with_setting
    if lowering is not None:
        for layer in step.model.layers:
            if isinstance(layer, Conv2D):
                layer.lowering = lowering
    return step.train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mnist-cnn"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    p.add_argument("--repeats", type=int, default=5)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--lowering", nargs=2, metavar=("A", "B"), choices=["auto", "columns", "rows", "tiles", "direct"])
    group.add_argument("--set", nargs=2, metavar=("A", "B"), help="NAME=LITERAL of xpcnn.settings for each variant")
    args = p.parse_args()
    placement = B.resolve("cpu")
    for model in args.models:
        for batch in args.batch_sizes:
            steps = max(2, 256 // batch)
            runs = []
            for k in range(2):
                step = XpcnnStep(model, batch, placement)
                lowering = args.lowering[k] if args.lowering else None
                setting = args.set[k] if args.set else None
                runs.append((lowering or setting, step, variant(step, lowering, setting)))
            times: dict[str, list[float]] = {label: [] for label, _, _ in runs}
            for _ in range(args.repeats):
                for label, step, fn in runs:
                    times[label].append(_time(fn, step.sync, steps))
            rates = [batch / statistics.median(times[label]) for label, _, _ in runs]
            print(f"{model} batch {batch}: {runs[0][0]} {rates[0]:.0f} img/s, {runs[1][0]} {rates[1]:.0f} img/s, "
                  f"ratio {rates[0] / rates[1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
