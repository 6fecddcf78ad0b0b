"""Side-by-side timing of xpcnn and native PyTorch on synthetic data of each preset's input shape.

The 28x28 presets take ``(N, 1, 28, 28)`` batches; ``resnet20`` and ``fastnet`` take ``(N, 3, 32, 32)`` by default
(CIFAR-10's shape) or any ``input_shape`` ``(C, H, W)`` they accept. Labels are drawn from 10 classes.

Each repeat times ``steps`` xpcnn steps and then ``steps`` reference steps, so machine drift
hits both alike; the reported figure is the median over repeats. GPU timings synchronize the
device before reading the clock, so they never time a queue.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from xpcnn import backend as B
from xpcnn import models
from xpcnn.backend import profiling
from xpcnn.bench.flops import inference_flops, training_flops
from xpcnn.kernels import step_scope
from xpcnn.kernels.numpy.compiled import warm_up
from xpcnn.losses import SoftmaxCrossEntropy
from xpcnn.model import Sequential
from xpcnn.optim import Adam

_PEAK_CACHE: dict[str, float] = {}


def preset_input_shape(name: str, input_shape: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
    """The ``(C, H, W)`` of one image that preset ``name`` is timed on: ``input_shape`` if given, else the preset's own
    (``(1, 28, 28)`` for the 28x28 presets, ``(3, 32, 32)`` for ``resnet20`` and ``fastnet``).

    Raises ValueError for an unknown preset or an ``input_shape`` that is not three positive ints.
    """
    if name not in models.PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(models.PRESETS)}")
    if input_shape is None:
        if not models.takes_shape(name):
            return (1, 28, 28)
        size = models.SHAPED_DEFAULTS["image_size"]
        return (models.SHAPED_DEFAULTS["in_channels"], size, size)
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise ValueError(f"input shape must be three positive ints (C, H, W), got {shape!r}")
    return shape  # type: ignore[return-value]


def build_preset(name: str, seed: int = 0, input_shape: tuple[int, int, int] | None = None) -> Sequential:
    """Preset ``name`` (NumPy) built for images of ``preset_input_shape(name, input_shape)`` and 10 classes.

    Raises ValueError as :func:`preset_input_shape` does, and as :func:`xpcnn.models.build` does for a shape the preset
    does not take (a 28x28 preset given anything but ``(1, 28, 28)``; fastnet given a size not divisible by 4).
    """
    c, h, w = preset_input_shape(name, input_shape)
    return models.build(name, seed=seed, in_channels=c, image_size=(h, w))


class XpcnnStep:
    """One xpcnn training step (forward, backward, Adam) on fixed synthetic data: ``x`` of shape
    ``(batch_size, *preset_input_shape(name, input_shape))`` float32, ``y`` of shape ``(batch_size,)`` int in
    [0, 10)."""

    def __init__(self, name: str, batch_size: int, placement: B.Placement, seed: int = 0,
                 input_shape: tuple[int, int, int] | None = None) -> None:
        self.placement = placement
        self.input_shape = preset_input_shape(name, input_shape)
        self.model = build_preset(name, seed, self.input_shape).to(placement.device, placement.backend)
        self.optimizer = Adam(self.model, lr=1e-3)
        self.loss = SoftmaxCrossEntropy(check=False)
        rng = B.random.host_generator(seed, 99)
        self.x = B.from_numpy(rng.standard_normal((batch_size, *self.input_shape)).astype("float32"), placement)
        self.y = B.from_numpy(rng.integers(0, 10, batch_size), placement)

    def train(self) -> None:
        self.model.train()
        self.loss.forward(self.model.forward(self.x), self.y)
        self.model.backward(self.loss.backward(), need_input_grad=False)
        self.optimizer.step()

    def infer(self) -> None:
        self.model.eval()
        profiling.block_until_ready(self.model.forward(self.x))

    def sync(self) -> None:
        profiling.block_until_ready(self.model.parameters()[0])
        profiling.synchronize(self.placement)

    def layer_times(self, repeats: int = 5) -> list[dict[str, Any]]:
        """Median forward and backward milliseconds of each layer inside a training step, walking the
        model's plan as a step does. A fused step's time goes to its last layer (the pooling layer);
        the activation folded into it shows 0 ms."""
        model = self.model.train()
        times = {i: ([], []) for i in range(len(model.layers))}
        steps = model.plan
        for _ in range(repeats):
            x = self.x
            with step_scope(x):
                for step in steps:
                    start = time.perf_counter()
                    x = step.forward(x)
                    self.sync_array(x)
                    times[step.indices[-1]][0].append(time.perf_counter() - start)
                self.loss.forward(x, self.y)
                grad = self.loss.backward()
                for k in reversed(range(len(steps))):
                    start = time.perf_counter()
                    grad = steps[k].backward(grad, need_input_grad=k > 0)
                    if grad is not None:
                        self.sync_array(grad)
                    times[steps[k].indices[-1]][1].append(time.perf_counter() - start)
        return [{"layer": f"{i} {type(layer).__name__}",
                 "forward_ms": 1e3 * statistics.median(times[i][0]) if times[i][0] else 0.0,
                 "backward_ms": 1e3 * statistics.median(times[i][1]) if times[i][1] else 0.0}
                for i, layer in enumerate(model.layers)]

    def sync_array(self, x: Any) -> None:
        profiling.block_until_ready(x)
        profiling.synchronize(self.placement)


#: Untimed running before each timed block. Right after the other side ran, its thread pool still
#: holds the cores (OpenBLAS workers spin for ~0.1 s after a GEMM; OpenMP threads likewise), which
#: slowed PyTorch's first steps after an xpcnn block by up to 2x on a 2-core machine.
SETTLE_SECONDS = 0.25


def _time(fn: Callable[[], None], sync: Callable[[], None], steps: int, settle: float = SETTLE_SECONDS) -> float:
    """Mean seconds per call of ``fn`` over ``steps`` calls, after ``settle`` seconds (at least one call) untimed."""
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < settle:
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - start) / steps


def matmul_peak(placement: B.Placement) -> float:
    key = str(placement)
    if key not in _PEAK_CACHE:
        _PEAK_CACHE[key] = profiling.matmul_peak_gflops(placement)
    return _PEAK_CACHE[key]


def measure(model: str, batch_size: int, backend: str | None = None, device: str = "cpu",
            reference: str | None = "torch", steps: int = 5, repeats: int = 5, warmup: int = 2,
            settle: float = SETTLE_SECONDS, input_shape: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """One measurement: training and inference images/s of xpcnn (and of the reference), GFLOP/s, memory.

    Both engines run on the same synthetic batch, of shape ``(batch_size, *preset_input_shape(model,
    input_shape))`` (recorded as ``input_shape``, ``[C, H, W]``). Each timed block of ``steps`` calls follows
    ``settle`` seconds of untimed calls of the same kind.
    """
    placement = B.resolve(device, backend)
    warm_up()
    ours = XpcnnStep(model, batch_size, placement, input_shape=input_shape)
    ref = None
    if reference == "torch":
        from xpcnn.backend.torch_reference import TorchTrainStep
        ref = TorchTrainStep(ours.model.config(), {k: B.to_numpy(v) for k, v in ours.model.state_dict().items()},
                             batch_size, device="cuda" if placement.kind == "cuda" else "cpu",
                             input_shape=ours.input_shape)
    elif reference is not None:
        raise ValueError(f"unknown reference {reference!r}; the only reference is 'torch'")
    profiling.reset_peak_memory(placement)
    for _ in range(warmup):
        ours.train()
        ours.infer()
        if ref is not None:
            ref.train()
            ref.infer()
    train_ours, train_ref, infer_ours, infer_ref = [], [], [], []
    for _ in range(repeats):
        train_ours.append(_time(ours.train, ours.sync, steps, settle))
        if ref is not None:
            train_ref.append(_time(ref.train, ref.synchronize, steps, settle))
        infer_ours.append(_time(ours.infer, ours.sync, steps, settle))
        if ref is not None:
            infer_ref.append(_time(ref.infer, ref.synchronize, steps, settle))
    t_train, t_infer = statistics.median(train_ours), statistics.median(infer_ours)
    flops = training_flops(ours.model, ours.input_shape) * batch_size
    gflops = flops / t_train / 1e9
    result: dict[str, Any] = {
        "model": model, "backend": placement.backend, "device": str(placement).split(" on ")[1],
        "batch_size": batch_size, "input_shape": list(ours.input_shape),
        "train_img_s": batch_size / t_train, "infer_img_s": batch_size / t_infer, "train_gflop_s": gflops,
        "infer_gflop_s": inference_flops(ours.model, ours.input_shape) * batch_size / t_infer / 1e9,
        "matmul_peak_gflop_s": matmul_peak(placement), "steps": steps, "repeats": repeats, "settle_s": settle,
        "peak_memory_bytes": profiling.peak_memory_bytes(placement),
    }
    result["fraction_of_peak"] = gflops / result["matmul_peak_gflop_s"]
    if ref is not None:
        result["reference"] = "torch"
        result["reference_train_img_s"] = batch_size / statistics.median(train_ref)
        result["reference_infer_img_s"] = batch_size / statistics.median(infer_ref)
        result["ratio_vs_reference"] = result["train_img_s"] / result["reference_train_img_s"]
        result["infer_ratio_vs_reference"] = result["infer_img_s"] / result["reference_infer_img_s"]
        result["reference_peak_memory_bytes"] = ref.peak_memory_bytes()
    else:
        result.update(reference=None, reference_train_img_s=None, ratio_vs_reference=None)
    return result
