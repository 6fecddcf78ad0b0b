"""A/B of two xpcnn variants: training images/s of the same preset, interleaved in one process.

A variant is an environment setting read at call time (``--env XPCNN_NUMBA=1 XPCNN_NUMBA=0``),
a convolution lowering forced on every Conv2D (``--lowering auto columns``), or a module constant
set before each call (``--set xpcnn.ops.conv.COLUMN_BUFFER_BYTES=2097152 ...=4194304``). Each timed block
follows the harness's settle time, as in ``xpcnn bench``; the figure is the median of repeats.

    python bench/ab.py --models mnist-cnn seed-deep --batch-sizes 32 128 --env XPCNN_NUMBA=1 XPCNN_NUMBA=0
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import statistics
from collections.abc import Callable

from xpcnn import backend as B
from xpcnn.bench.harness import XpcnnStep, _time
from xpcnn.layers import Conv2D


def variant(step: XpcnnStep, env: str | None, lowering: str | None, setting: str | None = None
            ) -> Callable[[], None]:
    """``step.train`` with ``env`` (``NAME=VALUE``) or ``setting`` (``module.NAME=literal``) set before
    each call, or its convs forced to ``lowering``."""
    if setting is not None:
        target, literal = setting.split("=", 1)
        module_name, attribute = target.rsplit(".", 1)
        module, value = importlib.import_module(module_name), ast.literal_eval(literal)
        if not hasattr(module, attribute):
            raise SystemExit(f"--set: {module_name} has no attribute {attribute!r}")

        def run_with_setting() -> None:
            setattr(module, attribute, value)
            step.train()
        return run_with_setting
    if lowering is not None:
        for layer in step.model.layers:
            if isinstance(layer, Conv2D):
                layer.lowering = lowering
    if env is None:
        return step.train
    name, value = env.split("=", 1)

    def run() -> None:
        os.environ[name] = value
        step.train()
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mnist-cnn"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    p.add_argument("--repeats", type=int, default=5)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--env", nargs=2, metavar=("A", "B"), help="NAME=VALUE for each variant")
    group.add_argument("--lowering", nargs=2, metavar=("A", "B"), choices=["auto", "columns", "rows", "tiles", "direct"])
    group.add_argument("--set", nargs=2, metavar=("A", "B"), help="module.NAME=LITERAL for each variant")
    args = p.parse_args()
    placement = B.resolve("cpu")
    for model in args.models:
        for batch in args.batch_sizes:
            steps = max(2, 256 // batch)
            runs = []
            for k in range(2):
                step = XpcnnStep(model, batch, placement)
                env = args.env[k] if args.env else None
                lowering = args.lowering[k] if args.lowering else None
                setting = args.set[k] if args.set else None
                runs.append((env or lowering or setting, step, variant(step, env, lowering, setting)))
            times: dict[str, list[float]] = {label: [] for label, _, _ in runs}
            for _ in range(args.repeats):
                for label, step, fn in runs:
                    times[label].append(_time(fn, step.sync, steps))
            rates = [batch / statistics.median(times[label]) for label, _, _ in runs]
            print(f"{model} batch {batch}: {runs[0][0]} {rates[0]:.0f} img/s, {runs[1][0]} {rates[1]:.0f} img/s, "
                  f"ratio {rates[0] / rates[1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
