"""``xpcnn bench``: time training steps and inference against native PyTorch, side by side."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from xpcnn import models, strict_json
from xpcnn.bench.harness import SETTLE_SECONDS
from xpcnn.cli.common import add_device_arguments, non_negative_float, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time training and inference against native PyTorch",
                       description="Times forward + backward + update (and inference) on synthetic data of the "
                                   "preset's input shape after warm-up, as the median of repeats, interleaving "
                                   "xpcnn and the reference in one process.")
    p.add_argument("--model", default="mnist-cnn", choices=sorted(models.PRESETS), help="default: %(default)s")
    p.add_argument("--input", type=input_shape, metavar="CxHxW",
                   help="image shape of the synthetic batch (default: the preset's own: 1x28x28, or 3x32x32 for "
                        "resnet20 and fastnet, which take any; the 28x28 presets take only 1x28x28)")
    p.add_argument("--batch-size", type=positive_int, nargs="+", default=[128], help="one or more (default: 128)")
    add_device_arguments(p)
    p.add_argument("--reference", choices=["torch", "none"], default="torch", help="default: %(default)s")
    p.add_argument("--steps", type=positive_int, default=5, help="steps per timed repeat (default: %(default)s)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed repeats; the median is kept")
    p.add_argument("--settle", type=non_negative_float, default=SETTLE_SECONDS, metavar="SECONDS",
                   help="untimed running before each timed block, so the other engine's threads have "
                        "let go of the cores (default: %(default)s)")
    p.add_argument("--breakdown", action="store_true", help="also print per-layer forward/backward times")
    p.add_argument("--memory", action="store_true",
                   help="also measure peak host memory of training (CPU; a fresh process per engine)")
    p.add_argument("--json", action="store_true", help="one JSON object per measurement")
    p.set_defaults(run=run)


def input_shape(text: str) -> tuple[int, int, int]:
    """argparse type: ``CxHxW`` (e.g. ``3x32x32``) as ``(C, H, W)``, three positive ints."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected CxHxW with three positive integers, e.g. 3x32x32, got {text!r}")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def run(args: argparse.Namespace) -> int:
    from xpcnn import backend as B
    from xpcnn.bench.harness import XpcnnStep, measure
    reference = None if args.reference == "none" else args.reference
    if reference == "torch" and importlib.util.find_spec("torch") is None:
        print("xpcnn bench: PyTorch is not installed, so xpcnn is timed alone (for the side-by-side "
              "comparison: pip install torch)", file=sys.stderr)
        reference = None
    for batch in args.batch_size:
        result = measure(args.model, batch, args.backend, args.device, reference, args.steps, args.repeats,
                         settle=args.settle, input_shape=args.input)
        shape = tuple(result["input_shape"])
        if args.memory and result["device"] == "cpu" and result["backend"] == "numpy":
            from xpcnn.bench.memory import measure_in_subprocess
            result["peak_memory_bytes"] = measure_in_subprocess("xpcnn", args.model, batch, input_shape=shape)
            if reference:
                result["reference_peak_memory_bytes"] = measure_in_subprocess("torch", args.model, batch,
                                                                              input_shape=shape)
        if args.breakdown:
            result["layers"] = XpcnnStep(args.model, batch, B.resolve(args.device, args.backend),
                                         input_shape=shape).layer_times()
        if args.json:
            print(strict_json.dumps(result), flush=True)
            continue
        on_input = "" if shape == (1, 28, 28) else f" ({'x'.join(map(str, shape))})"
        line = (f"{args.model} batch {batch}{on_input} on {result['backend']}/{result['device']}: "
                f"train {result['train_img_s']:.0f} img/s ({result['train_gflop_s']:.1f} GFLOP/s, "
                f"{100 * result['fraction_of_peak']:.0f}% of matmul peak), infer {result['infer_img_s']:.0f} img/s")
        if reference:
            line += (f" | torch train {result['reference_train_img_s']:.0f} img/s, "
                     f"infer {result['reference_infer_img_s']:.0f} img/s | ratio {result['ratio_vs_reference']:.2f}")
        print(line, flush=True)
        if result.get("peak_memory_bytes"):
            ref = result.get("reference_peak_memory_bytes")
            print(f"  peak memory: xpcnn {result['peak_memory_bytes'] / 2**20:.0f} MiB"
                  + (f", torch {ref / 2**20:.0f} MiB" if ref else ""))
        for row in result.get("layers", []):
            print(f"  {row['layer']:<16} forward {row['forward_ms']:7.2f} ms   backward {row['backward_ms']:7.2f} ms")
    return 0
