"""Where a training step's time goes, xpcnn (NumPy) against PyTorch CPU, by kind of layer and phase.

    python bench/layer_profile.py [--model resnet20] [--batch-size 128] [--input CxHxW] [--steps 5] [--warmup 3]

Each engine runs in its own fresh process (``--engine xpcnn`` or ``--engine torch``, which print one JSON line;
without ``--engine`` both run, one after the other, and a Markdown table compares them). Both time ``--steps``
training steps (forward, loss, backward, Adam) of the same preset on the same synthetic batch shape as
``xpcnn.bench.harness`` after ``--warmup`` untimed steps, and report the mean milliseconds per step of:

- xpcnn: every leaf layer's ``forward`` and ``backward`` (layers nested in a ``Residual`` included; a residual
  layer's own remainder, its sum, shows as ``add``; an activation fused with the pooling layer after it, as one
  ``ReLU+MaxPool2D fused`` row), the loss, and ``optimizer.step()``, timed by wrapping those
  methods on the instances (NumPy runs synchronously). Convolutions are also listed one row per signature
  (channels, kernel, input size; PyTorch's forward only: its backward events carry no shapes).
- PyTorch: ``torch.profiler`` CPU time of the forward ops (``aten::conv2d``, ``aten::batch_norm``, ...) and of
  each autograd node's backward (``autograd::engine::evaluate_function: ConvolutionBackward0``, ...), plus
  ``Optimizer.step``. The profiler adds a little overhead of its own.

Both also report the untouched step time (the mean over ``--steps`` steps timed without any wrapping).
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
from pathlib import Path

from processes import input_shape  # bench/processes.py, beside this script: the same CxHxW check

KINDS = {"Conv2D": "conv", "BatchNorm2D": "batchnorm", "ReLU": "relu", "GlobalAvgPool2D": "pool",
         "MaxPool2D": "pool", "AvgPool2D": "pool", "Dense": "linear", "Flatten": "other", "Dropout": "other"}
TORCH_FORWARD = {"aten::conv2d": "conv", "aten::batch_norm": "batchnorm", "aten::relu": "relu", "aten::add": "add",
                 "aten::adaptive_avg_pool2d": "pool", "aten::max_pool2d": "pool", "aten::avg_pool2d": "pool",
                 "aten::linear": "linear", "aten::flatten": "other", "aten::cross_entropy_loss": "loss"}
TORCH_BACKWARD = {"ConvolutionBackward0": "conv", "NativeBatchNormBackward0": "batchnorm",
                  "CudnnBatchNormBackward0": "batchnorm", "ReluBackward0": "relu", "AddBackward0": "add",
                  "MeanBackward1": "pool", "AdaptiveAvgPool2DBackward0": "pool",
                  "MaxPool2DWithIndicesBackward0": "pool",
                  "AddmmBackward0": "linear", "TBackward0": "linear", "ViewBackward0": "other",
                  "ReshapeAliasBackward0": "other", "NllLossBackward0": "loss", "LogSoftmaxBackward0": "loss",
                  "torch::autograd::AccumulateGrad": "other"}


def _plain_ms(step: object, args: argparse.Namespace) -> float:
    """Milliseconds per training step of ``step`` (an XpcnnStep or TorchTrainStep), unprofiled, after
    ``args.warmup`` steps, over ``args.steps``."""
    for _ in range(args.warmup):
        step.train()  # type: ignore[attr-defined]
    start = time.perf_counter()
    for _ in range(args.steps):
        step.train()  # type: ignore[attr-defined]
    return 1e3 * (time.perf_counter() - start) / args.steps


def profile_xpcnn(args: argparse.Namespace) -> dict:
    import numpy  # noqa: F401  (as users run it: numpy first)

    import xpcnn
    xpcnn.enable_wide_vectors()  # as the xpcnn command and bench/processes.py do, before anything compiles
    from xpcnn import backend as B
    from xpcnn.bench.harness import XpcnnStep
    from xpcnn.layers import Residual
    from xpcnn.plan import FusedStep
    from xpcnn.kernels.numpy.compiled import warm_up
    warm_up()
    step = XpcnnStep(args.model, args.batch_size, B.resolve("cpu"), input_shape=args.input)
    plain_ms = _plain_ms(step, args)
    seconds: dict[tuple[int, str], float] = collections.defaultdict(float)  # (id of the object, phase)
    in_size: dict[int, tuple[int, ...]] = {}  # id of a layer -> (H, W) of its input

    def wrap(obj: object, method: str) -> None:
        inner, key = getattr(obj, method), (id(obj), method)

        def timed(*a, **k):
            if method == "forward" and a:
                in_size[id(obj)] = tuple(a[0].shape[2:])
            t = time.perf_counter()
            out = inner(*a, **k)
            seconds[key] += time.perf_counter() - t
            return out
        setattr(obj, method, timed)

    def leaves(layers):
        for layer in layers:
            if isinstance(layer, Residual):
                yield from leaves(layer.block + layer.shortcut)
            else:
                yield layer

    residuals = [layer for layer in step.model.layers if isinstance(layer, Residual)]
    all_leaves = list(leaves(step.model.layers))
    fused = [s for s in step.model.plan if isinstance(s, FusedStep)]  # an activation and a pool run as one op
    for obj in [*residuals, *all_leaves, *fused, step.loss]:
        wrap(obj, "forward")
        wrap(obj, "backward")
    wrap(step.optimizer, "step")
    start = time.perf_counter()
    for _ in range(args.steps):
        step.train()
    wrapped_ms = 1e3 * (time.perf_counter() - start) / args.steps
    ms: dict[str, float] = collections.defaultdict(float)
    scale = 1e3 / args.steps
    for phase in ("forward", "backward"):
        for layer in all_leaves:
            kind = KINDS.get(type(layer).__name__, type(layer).__name__)
            ms[f"{kind}|{phase}"] += scale * seconds[(id(layer), phase)]
            if kind == "conv":
                h, w = in_size[id(layer)]
                sig = (f"conv {layer.in_channels}->{layer.out_channels} {layer.kernel_size[0]}x{layer.kernel_size[1]}"
                       f" in {h}x{w}")
                ms[f"{sig}|{phase}"] += scale * seconds[(id(layer), phase)]
        for r in residuals:  # the residual layer's own share: its sum (forward) and the gradients' sum (backward)
            ms[f"add|{phase}"] += scale * (seconds[(id(r), phase)]
                                           - sum(seconds[(id(c), phase)] for c in leaves(r.block + r.shortcut)))
        for s in fused:
            part = f"{type(s.activation).__name__}+{type(s.pool).__name__} fused"
            ms[f"{part}|{phase}"] += scale * seconds[(id(s), phase)]
        ms[f"loss|{phase}"] += scale * seconds[(id(step.loss), phase)]
    ms["optimizer|step"] = scale * seconds[(id(step.optimizer), "step")]
    return {"engine": "xpcnn", "xpcnn_file": xpcnn.__file__, "plain_step_ms": plain_ms,
            "wrapped_step_ms": wrapped_ms, "ms": dict(ms)}


def profile_torch(args: argparse.Namespace) -> dict:
    import numpy  # noqa: F401

    import torch
    from torch.profiler import ProfilerActivity, profile

    from xpcnn.backend.torch_reference import TorchTrainStep
    from xpcnn.bench.harness import build_preset, preset_input_shape
    shape = preset_input_shape(args.model, args.input)
    model = build_preset(args.model, 0, shape)
    step = TorchTrainStep(model.config(), model.state_dict(), args.batch_size, input_shape=shape)
    plain_ms = _plain_ms(step, args)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            step.train()
        wrapped_ms = 1e3 * (time.perf_counter() - start) / args.steps
    ms: dict[str, float] = collections.defaultdict(float)
    scale = 1e-3 / args.steps  # profiler times are microseconds
    unmapped: dict[str, float] = collections.defaultdict(float)
    for ev in prof.key_averages(group_by_input_shape=True):
        name, total = ev.key, ev.cpu_time_total
        if name in TORCH_FORWARD:
            ms[f"{TORCH_FORWARD[name]}|forward"] += scale * total
            if name == "aten::conv2d" and ev.input_shapes:
                x, w = ev.input_shapes[0], ev.input_shapes[1]
                ms[f"conv {w[1]}->{w[0]} {w[2]}x{w[3]} in {x[2]}x{x[3]}|forward"] += scale * total
        elif name.startswith("autograd::engine::evaluate_function: "):
            node = name.split(": ", 1)[1]
            kind = TORCH_BACKWARD.get(node)
            if kind is None:
                unmapped[node] += scale * total
            else:
                ms[f"{kind}|{'step' if kind == 'optimizer' else 'backward'}"] += scale * total
        elif name.startswith("Optimizer.step#"):
            ms["optimizer|step"] += scale * total
        elif name.startswith("Optimizer.zero_grad#"):
            ms["optimizer|zero_grad"] += scale * total
    ms.update({f"{k} (unmapped)|backward": v for k, v in unmapped.items()})
    return {"engine": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "plain_step_ms": plain_ms, "wrapped_step_ms": wrapped_ms, "ms": dict(ms)}


def table(args: argparse.Namespace, ours: dict, ref: dict) -> str:
    """The Markdown comparison: ms per step of each kind and phase, xpcnn against PyTorch."""
    keys = sorted(set(ours["ms"]) | set(ref["ms"]), key=lambda k: (k.startswith("conv "), -ours["ms"].get(k, 0)))
    lines = [f"{args.model}, batch {args.batch_size}: mean ms per training step over {args.steps} steps", "",
             "| part | phase | xpcnn ms | PyTorch ms | xpcnn / PyTorch |", "|---|---|---:|---:|---:|"]
    for key in keys:
        part, phase = key.split("|")
        a, b = ours["ms"].get(key), ref["ms"].get(key)
        cells = [f"{a:.1f}" if a is not None else "-", f"{b:.1f}" if b is not None else "-",
                 f"{a / b:.2f}" if a and b else "-"]
        lines.append(f"| {part} | {phase} | {' | '.join(cells)} |")
    lines += ["", f"Whole step without timers: xpcnn {ours['plain_step_ms']:.1f} ms, "
              f"PyTorch {ref['plain_step_ms']:.1f} ms (ratio of img/s xpcnn/PyTorch "
              f"{ref['plain_step_ms'] / ours['plain_step_ms']:.2f}); with timers / profiler: "
              f"{ours['wrapped_step_ms']:.1f} ms and {ref['wrapped_step_ms']:.1f} ms.",
              "PyTorch's conv rows by signature are forward only (its backward events carry no shapes)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--input", type=input_shape, metavar="CxHxW")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--engine", choices=["xpcnn", "torch"], help="run one engine in this process, print JSON")
    args = p.parse_args()
    if args.engine:
        print(json.dumps((profile_xpcnn if args.engine == "xpcnn" else profile_torch)(args)))
        return
    out = {}
    for engine in ("xpcnn", "torch"):
        cmd = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--engine", engine]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.exit(f"{engine} run failed:\n{proc.stderr[-3000:]}")
        out[engine] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(table(args, out["xpcnn"], out["torch"]), end="")


if __name__ == "__main__":
    main()
