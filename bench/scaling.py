"""How cost grows with batch size and image size, and that memory stays bounded (NumPy backend).

1. Batch sweep: a preset's training step at batch 1, 2, 4, ..., 1024, xpcnn/NumPy against native
   PyTorch (interleaved, settled, as ``xpcnn bench``), with the peak of NumPy memory a step holds
   (tracemalloc sees every NumPy allocation).
2. Image-size sweep: one convolution layer (16 -> 32 channels, 3x3, padding 1) forward + backward
   at 28x28 to 224x224, against PyTorch's conv2d with autograd, with the step's peak memory next
   to the size a whole-batch im2col buffer would have: the chunked buffer keeps the difference.

Writes bench/results/<date>-<host>-scaling.md (+ .png, .jsonl). Run through nox: ``nox -s scaling``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import socket
import statistics
import tracemalloc
from pathlib import Path

from compare import RESULTS, versions

from xpcnn import backend as B
from xpcnn import layers as L
from xpcnn.bench.harness import XpcnnStep, _time, measure
from xpcnn.ops.conv import COLUMN_BUFFER_BYTES


def traced_peak_bytes(fn) -> int:
    """Peak bytes of Python/NumPy allocations alive at once while ``fn`` runs (beyond those before it)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def batch_sweep(model: str, batches: list[int], repeats: int) -> list[dict]:
    rows = []
    for batch in batches:
        steps = max(1, min(8, 256 // batch))
        r = measure(model, batch, "numpy", "cpu", "torch", steps, repeats, warmup=1)
        step = XpcnnStep(model, batch, B.resolve("cpu"))
        step.train()
        r["step_peak_bytes"] = traced_peak_bytes(step.train)
        rows.append(r)
        print(json.dumps(r), flush=True)
    return rows


class ConvStep:
    """Forward + backward of one Conv2D layer on a fixed input, in xpcnn and in PyTorch."""

    def __init__(self, c_in: int, c_out: int, size: int, batch: int) -> None:
        import numpy as np
        import torch
        self.layer = L.Conv2D(c_in, c_out, 3, padding=1, seed=0)
        rng = np.random.default_rng(0)
        # Logical NCHW arrays backed by channel-last memory, as xpcnn's layers hand them on inside a network
        # (PyTorch gets plain NCHW tensors, its native layout).
        self.x = rng.standard_normal((batch, size, size, c_in), dtype=np.float32).transpose(0, 3, 1, 2)
        self.g = rng.standard_normal((batch, size, size, c_out), dtype=np.float32).transpose(0, 3, 1, 2)
        self.tx = torch.tensor(np.ascontiguousarray(self.x), requires_grad=True)
        self.tw = torch.tensor(np.asarray(self.layer.params["weight"]), requires_grad=True)
        self.tb = torch.tensor(np.asarray(self.layer.params["bias"]), requires_grad=True)
        self.tg = torch.tensor(np.ascontiguousarray(self.g))

    def ours(self) -> None:
        self.layer.forward(self.x)
        self.layer.backward(self.g)

    def torch(self) -> None:
        import torch
        y = torch.nn.functional.conv2d(self.tx, self.tw, self.tb, padding=1)
        y.backward(self.tg)


def size_sweep(sizes: list[int], batch: int, repeats: int, c_in: int = 16, c_out: int = 32) -> list[dict]:
    rows = []
    for size in sizes:
        step = ConvStep(c_in, c_out, size, batch)
        ours, ref = [], []
        for _ in range(repeats):
            ours.append(_time(step.ours, lambda: None, 2))
            ref.append(_time(step.torch, lambda: None, 2))
        t_ours, t_ref = statistics.median(ours), statistics.median(ref)
        flops = 3 * 2 * batch * size * size * 9 * c_in * c_out  # forward, input grad, weight grad
        r = {"layer": f"Conv2D({c_in}, {c_out}, 3, padding=1)", "size": size, "batch_size": batch,
             "ms": 1e3 * t_ours, "reference_ms": 1e3 * t_ref, "ratio_vs_reference": t_ref / t_ours,
             "gflop_s": flops / t_ours / 1e9, "step_peak_bytes": traced_peak_bytes(step.ours),
             "input_bytes": step.x.nbytes, "whole_batch_columns_bytes": batch * size * size * 9 * c_in * 4}
        rows.append(r)
        print(json.dumps(r), flush=True)
    return rows


def write_report(base: Path, model: str, batch_rows: list[dict], size_rows: list[dict]) -> None:
    mib = 2**20
    lines = [f"# xpcnn scaling, {datetime.date.today().isoformat()}", "",
             f"- host `{socket.gethostname()}`; versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
             "- command: `python bench/scaling.py` (via `nox -s scaling`); timings interleaved with native PyTorch "
             "in one process, each block after 0.25 s of untimed steps; medians of repeats.",
             "- peak memory = the most NumPy memory alive at once during one xpcnn step (tracemalloc), "
             "beyond the model, optimizer and data that exist before it.", "",
             f"## Batch size: `{model}` training step (forward + backward + Adam)", "",
             "| batch | xpcnn img/s | PyTorch img/s | ratio | ms per step | step peak MiB | MiB per image |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in batch_rows:
        b = r["batch_size"]
        lines.append(f"| {b} | {r['train_img_s']:.0f} | {r['reference_train_img_s']:.0f} | "
                     f"{r['ratio_vs_reference']:.2f} | {1e3 * b / r['train_img_s']:.1f} | "
                     f"{r['step_peak_bytes'] / mib:.1f} | {r['step_peak_bytes'] / mib / b:.2f} |")
    layer = size_rows[0]["layer"] if size_rows else ""
    lines += ["", f"## Image size: `{layer}` forward + backward, batch {size_rows[0]['batch_size'] if size_rows else ''}",
              "", "xpcnn gets its input and output gradient as NCHW views of channel-last memory (as layers "
              "pass them on inside an xpcnn network); PyTorch gets contiguous NCHW tensors.", "",
              f"Patch (im2col) buffers are built per chunk of images, at most {COLUMN_BUFFER_BYTES // mib} MiB "
              "or one image's, whichever is larger, and rebuilt in the backward pass when a batch's would pass "
              "16 MiB.", "",
              "| size | xpcnn ms | PyTorch ms | ratio | xpcnn GFLOP/s | step peak MiB | input MiB | "
              "whole-batch im2col MiB |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in size_rows:
        lines.append(f"| {r['size']}x{r['size']} | {r['ms']:.1f} | {r['reference_ms']:.1f} | "
                     f"{r['ratio_vs_reference']:.2f} | {r['gflop_s']:.0f} | {r['step_peak_bytes'] / mib:.1f} | "
                     f"{r['input_bytes'] / mib:.1f} | {r['whole_batch_columns_bytes'] / mib:.0f} |")
    lines += ["", f"![scaling]({base.with_suffix('.png').name})", ""]
    base.with_suffix(".md").write_text("\n".join(lines))
    base.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in batch_rows + size_rows))
    write_chart(base.with_suffix(".png"), model, batch_rows, size_rows)


def write_chart(path: Path, model: str, batch_rows: list[dict], size_rows: list[dict]) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no chart (pip install 'xpcnn[plots]')")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    batches = [r["batch_size"] for r in batch_rows]
    left.plot(batches, [r["train_img_s"] for r in batch_rows], marker="o", label="xpcnn numpy")
    left.plot(batches, [r["reference_train_img_s"] for r in batch_rows], marker="o", label="PyTorch CPU")
    left.set(title=f"{model} training", xscale="log", yscale="log", xlabel="batch size", ylabel="images/s")
    sizes = [r["size"] for r in size_rows]
    right.plot(sizes, [r["ms"] for r in size_rows], marker="o", label="xpcnn numpy")
    right.plot(sizes, [r["reference_ms"] for r in size_rows], marker="o", label="PyTorch CPU")
    right.set(title="one conv layer, forward + backward", xscale="log", yscale="log", xlabel="image side",
              ylabel="ms")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mnist-cnn")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 56, 112, 224])
    p.add_argument("--size-batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    batch_rows = batch_sweep(args.model, args.batch_sizes, args.repeats)
    size_rows = size_sweep(args.sizes, args.size_batch, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"{datetime.date.today().isoformat()}-{socket.gethostname().split('.')[0] or 'host'}-scaling"
    write_report(base, args.model, batch_rows, size_rows)
    print(f"wrote {base.with_suffix('.md')}")


if __name__ == "__main__":
    main()
