"""Compare backends: every preset at several batch sizes on every backend available here.

Writes bench/results/<date>-<host>.md (a table with machine, versions and the command) and a
PNG chart of training images/s per backend. Run through nox: ``nox -s compare``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import platform
import socket
import sys
from pathlib import Path

from xpcnn import backend as B
from xpcnn.bench.harness import XpcnnStep, measure
from xpcnn.bench.memory import measure_in_subprocess
from xpcnn.models import PRESETS

RESULTS = Path(__file__).resolve().parent / "results"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("numpy", "array-api-compat", "numba", "torch", "jax", "array-api-strict", "cupy-cuda12x",
                 "cupy-cuda13x"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 128, 512])
    p.add_argument("--other-backend-batch-sizes", type=int, nargs="+", default=[32, 128],
                   help="batch sizes for the non-default backends (they are proofs of portability, slow on CPU)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    host = socket.gethostname().split(".")[0] or "host"
    stamp = datetime.date.today().isoformat()
    placements = [("numpy", "cpu")] + [(b, "cpu") for b in ("torch", "jax", "array_api_strict") if B.is_available(b)]
    for name, device in (("cupy", "cuda"), ("torch", "cuda")):
        try:
            B.resolve(device, name)
            placements.append((name, device))
        except Exception:
            pass
    rows = []
    for backend, device in placements:
        sizes = args.batch_sizes if (backend, device) in (("numpy", "cpu"), ("cupy", "cuda")) else \
            args.other_backend_batch_sizes
        for model in PRESETS:
            for batch in sizes:
                steps = max(1, args.steps if batch <= 128 else args.steps // 2)
                r = measure(model, batch, backend, device, "torch", steps, args.repeats)
                rows.append(r)
                print(json.dumps(r), flush=True)
    memory = {}
    for engine in ("xpcnn", "torch"):
        memory[engine] = measure_in_subprocess(engine, "mnist-cnn", 128)
    breakdown = {(model, batch): XpcnnStep(model, batch, B.resolve("cpu")).layer_times()
                 for model in PRESETS for batch in (32, 128)}
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"{stamp}-{host}"
    write_table(base.with_suffix(".md"), rows, memory, base.with_suffix(".png").name, breakdown)
    (base.with_suffix(".jsonl")).write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_chart(base.with_suffix(".png"), rows)
    print(f"wrote {base.with_suffix('.md')}, {base.with_suffix('.png')}, {base.with_suffix('.jsonl')}")


def write_table(path: Path, rows: list[dict], memory: dict[str, int], chart: str,
                breakdown: dict[tuple[str, int], list[dict]]) -> None:
    v = versions()
    lines = [f"# xpcnn backend comparison, {datetime.date.today().isoformat()}", "",
             f"- machine: {platform.processor() or platform.machine()}, {platform.system()}, "
             f"host `{socket.gethostname()}`",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
             f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}` (via `nox -s compare`)",
             "- training = forward + backward + Adam update on synthetic 28x28 data; reference = the same network "
             "in native PyTorch on the same device, timed interleaved in the same process (each timed block "
             f"after {rows[0].get('settle_s', 0):g} s of untimed steps, so the other engine's threads have let go "
             "of the cores); median of repeats.",
             "- ratio = xpcnn training img/s / PyTorch training img/s (>= 1.0 means xpcnn is faster).", "",
             "| backend | device | model | batch | train img/s | torch train img/s | ratio | infer img/s | "
             "torch infer img/s | GFLOP/s | % of matmul peak |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['device']} | {r['model']} | {r['batch_size']} | {r['train_img_s']:.0f} | "
                     f"{r['reference_train_img_s']:.0f} | **{r['ratio_vs_reference']:.2f}** | {r['infer_img_s']:.0f} | "
                     f"{r['reference_infer_img_s']:.0f} | {r['train_gflop_s']:.1f} | "
                     f"{100 * r['fraction_of_peak']:.0f}% |")
    ratio = memory["xpcnn"] / memory["torch"] if memory.get("torch") else float("nan")
    lines += ["", f"Peak host memory growth of training `mnist-cnn` at batch 128 (fresh process each): "
              f"xpcnn/numpy {memory['xpcnn'] / 2**20:.0f} MiB, PyTorch {memory['torch'] / 2**20:.0f} MiB "
              f"(ratio {ratio:.2f}).", "", f"![training images/s per backend]({chart})", "",
              "## Where the time goes (xpcnn on numpy, median ms per layer inside a training step)", ""]
    for (model, batch), layers in breakdown.items():
        lines += [f"**{model}, batch {batch}**", "", "| layer | forward ms | backward ms |", "|---|---:|---:|"]
        lines += [f"| {r['layer']} | {r['forward_ms']:.2f} | {r['backward_ms']:.2f} |" for r in layers] + [""]
    path.write_text("\n".join(lines))


def write_chart(path: Path, rows: list[dict]) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no chart (pip install 'xpcnn[plots]')")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(PRESETS)
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4), sharey=False)
    for ax, model in zip(axes, models):
        series = {}
        for r in rows:
            if r["model"] == model:
                series.setdefault(f"xpcnn {r['backend']}/{r['device']}", {})[r["batch_size"]] = r["train_img_s"]
                if r["backend"] == "numpy":
                    series.setdefault(f"PyTorch {r['device']} (native)", {})[r["batch_size"]] = r["reference_train_img_s"]
        for label, points in series.items():
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], marker="o", label=label)
        ax.set(title=model, xscale="log", yscale="log", xlabel="batch size", ylabel="training images/s")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
