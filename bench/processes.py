"""Training speed as users run it: xpcnn and PyTorch, each in its own fresh Python process.

    python bench/processes.py [--models M ...] [--batch-sizes N ...] [--rounds 3] [--seconds 2]
                              [--orders numpy-first xpcnn-first] [--label L] [--out DIR]
                              [--xpcnn-path DIR] [--busy 0.25] [--retries 3] [--input CxHxW] [--smoke]

Every run is a new ``python -c`` child that builds one preset at one batch size and times
training steps (forward, backward, Adam) on fixed synthetic data of the preset's input shape
(1x28x28 for the 28x28 presets; 3x32x32 for ``resnet20`` and ``fastnet``, or ``--input``'s shape,
which applies to those two only):

- ``xpcnn numpy-first``: ``import numpy``, then ``import xpcnn``, then ``xpcnn.enable_wide_vectors()``
  where that opt-in exists, then ``xpcnn.bench.harness.XpcnnStep`` on the NumPy backend;
- ``xpcnn xpcnn-first``: the same with ``import xpcnn`` before ``import numpy``;
- ``torch``: ``import numpy``, ``import torch``, then the same network (same initial weights) as
  native PyTorch through ``xpcnn.backend.torch_reference.TorchTrainStep``.

Each child first runs untimed for ``--warmup`` seconds (at least 3 steps, and until two consecutive
steps are within 30% of each other or 20 s pass: numba compiles, or loads from its disk cache, on
first use), then times steps for ``--seconds`` (at least 5) with ``time.perf_counter`` and prints
images/s as one JSON line, with the cores other processes kept busy meanwhile (from ``/proc/stat``):
each child starts once the machine is quiet (other processes below ``--busy`` cores for a second, or
after 5 minutes), and a run during which they used more than that is repeated, up to ``--retries``
times; its last attempt counts (the raw file keeps every attempt). Per round every configuration
runs its children back to back, xpcnn and PyTorch alternating, and the engine that goes first
alternates from round to round. The report gives medians over rounds and their ratios:
``<out>/<date>-<host>-processes[-<label>].md``, with every run's raw figure in the ``.jsonl`` beside it.

The xpcnn imported is the one this script's interpreter would import (``PYTHONPATH`` and the editable
install included) unless ``--xpcnn-path`` names a source tree; the children put that tree first on
``sys.path``, so their working directory cannot shadow it.
Standard library only; the children import numpy, xpcnn and torch.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

PRESETS = ["seed-simple", "seed-deep", "mnist-cnn", "lenet5", "resnet20", "fastnet"]  # xpcnn.models.PRESETS
SHAPED = {"resnet20", "fastnet"}  # presets that take any input shape (xpcnn.models.takes_shape; not imported here)
ORDERS = ["numpy-first", "xpcnn-first"]

CHILD = r"""
import json, os, sys, time
cfg = json.loads(sys.argv[1])
def cpu():  # (CPU seconds the whole machine was busy, incl. steal; CPU seconds of this process)
    try:
        f = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK"), sum(os.times()[:2])
sys.path.insert(0, cfg["path"])
if cfg["engine"] == "torch":
    import numpy, torch, xpcnn
    from xpcnn.backend.torch_reference import TorchTrainStep
    from xpcnn.bench.harness import build_preset, preset_input_shape
    shape = preset_input_shape(cfg["model"], cfg.get("input"))
    model = build_preset(cfg["model"], 0, shape)
    state = {k: xpcnn.backend.to_numpy(v) for k, v in model.state_dict().items()}
    step, wide = TorchTrainStep(model.config(), state, cfg["batch"], input_shape=shape), None
else:
    if cfg["order"] == "numpy-first":
        import numpy, xpcnn
    else:
        import xpcnn, numpy
    wide = hasattr(xpcnn, "enable_wide_vectors")
    if wide:
        xpcnn.enable_wide_vectors()
    import xpcnn.bench.harness
    step = xpcnn.bench.harness.XpcnnStep(cfg["model"], cfg["batch"], xpcnn.backend.resolve("cpu"),
                                         input_shape=cfg.get("input"))
    shape = step.input_shape
start, last, n = time.perf_counter(), None, 0
while True:
    t = time.perf_counter(); step.train(); t = time.perf_counter() - t; n += 1
    stable = last is not None and max(t, last) <= 1.3 * min(t, last)
    elapsed, last = time.perf_counter() - start, t
    if n >= 3 and elapsed >= cfg["warmup"] and (stable or elapsed >= 20):
        break
warmup, steps, cpu0, start = elapsed, 0, cpu(), time.perf_counter()
while steps < 5 or time.perf_counter() - start < cfg["seconds"]:
    step.train(); steps += 1
seconds, cpu1 = time.perf_counter() - start, cpu()
others = None if cpu0 is None else ((cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])) / seconds
print(json.dumps({"img_s": cfg["batch"] * steps / seconds, "steps": steps, "timed_s": seconds, "others_cores": others,
                  "warmup_s": warmup, "warmup_steps": n, "xpcnn_file": xpcnn.__file__, "input_shape": list(shape),
                  "numpy": numpy.__version__, "wide_vectors_opt_in": wide,
                  "numba_features_wide": "-prefer-256-bit" in os.environ.get("NUMBA_CPU_FEATURES", "")}))
"""


def input_shape(text: str) -> tuple[int, ...]:
    """argparse type: ``CxHxW`` (e.g. ``3x32x32``) as three positive ints."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected CxHxW with three positive integers, e.g. 3x32x32, got {text!r}")
    return tuple(int(p) for p in parts)


def busy_cores(seconds: float = 1.0) -> float:
    """Cores kept busy (steal included) over the next ``seconds``, by everything: this process sleeps."""
    def sample() -> float:
        f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")
    try:
        start = sample()
        time.sleep(seconds)
        return (sample() - start) / seconds
    except (OSError, ValueError):
        return 0.0


def run_child(cfg: dict, busy: float, retries: int) -> list[dict]:
    """One fresh process (its environment is this one's: PYTHONPATH, thread settings and all), started once
    the machine is quiet (or after 5 min), and run again, up to ``retries`` times, while other processes
    used more than ``busy`` cores during its timed block."""
    attempts: list[dict] = []
    while not attempts or (attempts[-1]["busy"] and len(attempts) <= retries):
        deadline = time.monotonic() + 300
        while busy_cores() > busy and time.monotonic() < deadline:
            pass
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"child {cfg} failed:\n{proc.stderr[-3000:]}")
        r = {**cfg, **json.loads(proc.stdout.strip().splitlines()[-1]), "attempt": len(attempts), "used": False}
        r["busy"] = (r["others_cores"] or 0.0) > busy
        attempts.append(r)
        print(f"round {cfg['round'] + 1} {cfg['model']:11} batch {cfg['batch']:4} {cfg['order'] or 'torch':11} "
              f"{r['img_s']:9,.0f} img/s ({r['steps']} steps, warm-up {r['warmup_s']:.1f} s, other processes "
              f"{r['others_cores'] or 0:.2f} cores{', busy' if r['busy'] else ''})", file=sys.stderr, flush=True)
    attempts[-1]["used"] = True
    return attempts


def xpcnn_root(path: str | None) -> str:
    """The source tree holding the xpcnn package to benchmark (found without importing it)."""
    if path:
        return str(Path(path).resolve())
    spec = importlib.util.find_spec("xpcnn")
    if spec is None or not spec.origin:
        sys.exit("xpcnn not importable; pass --xpcnn-path")
    return str(Path(spec.origin).resolve().parent.parent)


def git_commit(root: str) -> str:
    git = ["git", "-C", root]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "xpcnn"], capture_output=True, text=True).stdout
    return (head or "unknown") + (" (xpcnn/ has uncommitted changes)" if dirty.strip() else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> str:
    out = [f"python {platform.python_version()}"]
    for dist in ("numpy", "numba", "torch"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


def report(args: argparse.Namespace, runs: list[dict], root: str, command: str) -> str:
    """The Markdown report: machine, versions, command, and one row of medians per configuration."""
    rates: dict[tuple, list[float]] = {}
    for r in (r for r in runs if r["used"]):
        rates.setdefault((r["model"], r["batch"], r["order"] or "torch"), []).append(r["img_s"])
    med = {k: statistics.median(v) for k, v in rates.items()}

    def ratio(a: tuple, b: tuple) -> str:
        return f"{med[a] / med[b]:.2f}" if a in med and b in med else "-"

    imported = sorted({r["xpcnn_file"] for r in runs})
    root = str(Path(imported[0]).parent.parent) if len(imported) == 1 else root  # the tree actually imported
    files = ", ".join(f"`{f}`" for f in imported)
    wide = ", ".join(sorted({str(r["wide_vectors_opt_in"]) for r in runs if r["order"]}))
    lines = [f"# xpcnn vs PyTorch training, one fresh process per run ({datetime.date.today()})", "",
             f"- command: `{command}`", f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- CPU: {cpu_model()}", f"- versions: {versions()}, xpcnn {git_commit(root)} ({root})",
             f"- xpcnn imported by the children: {files}", f"- xpcnn.enable_wide_vectors() called: {wide}",
             f"- {args.rounds} round(s), warm-up >= {args.warmup} s, {args.seconds} s timed per run; "
             "medians over rounds", "",
             "| model | batch | xpcnn img/s (numpy first, median) | xpcnn img/s (xpcnn first, median) "
             "| PyTorch img/s (median) | ratio xpcnn/PyTorch | numpy-first / xpcnn-first |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    shapes = {r["model"]: "x".join(map(str, r["input_shape"])) for r in runs if "input_shape" in r}
    for model in args.models:
        shown = model if shapes.get(model, "1x28x28") == "1x28x28" else f"{model} ({shapes[model]})"
        for batch in args.batch_sizes:
            nf, xf, pt = ((model, batch, o) for o in ("numpy-first", "xpcnn-first", "torch"))
            ours = nf if nf in med else xf
            cells = " | ".join(f"{med[k]:,.0f}" if k in med else "-" for k in (nf, xf, pt))
            lines.append(f"| {shown} | {batch} | {cells} | {ratio(ours, pt)} | {ratio(nf, xf)} |")
    used = [r for r in runs if r["used"]]
    lines += ["", f"{len(runs) - len(used)} run(s) repeated because other processes used more than {args.busy} "
              f"cores meanwhile; {sum(r['busy'] for r in used)} of the {len(used)} runs used are still such runs."]
    spread = {k: max(v) / min(v) - 1 for k, v in rates.items() if len(v) > 1}
    if spread:
        worst = max(spread, key=spread.get)
        lines += ["", f"Spread across rounds (max/min - 1): median {statistics.median(spread.values()):.0%}, "
                  f"largest {spread[worst]:.0%} ({' '.join(map(str, worst))})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=PRESETS)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per run")
    p.add_argument("--warmup", type=float, default=1.5, help="minimum untimed seconds per run")
    p.add_argument("--orders", nargs="+", choices=ORDERS, default=ORDERS, help="xpcnn import orders")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--label", help="appended to the report's file name, e.g. baseline")
    p.add_argument("--xpcnn-path", help="source tree whose xpcnn/ the children import (default: the importable one)")
    p.add_argument("--busy", type=float, default=0.25, help="cores used by other processes that void a run")
    p.add_argument("--retries", type=int, default=3, help="repeats of a run voided by other processes")
    p.add_argument("--input", type=input_shape, metavar="CxHxW",
                   help="image shape for resnet20 and fastnet (default: 3x32x32); the 28x28 presets keep 1x28x28")
    p.add_argument("--smoke", action="store_true", help="one preset, one batch size, 1 round, 0.3 s timed")
    args = p.parse_args()
    if args.smoke:
        args.models, args.batch_sizes, args.rounds, args.seconds = args.models[:1], args.batch_sizes[:1], 1, 0.3
    root = xpcnn_root(args.xpcnn_path)
    env_note = f"PYTHONPATH={os.environ['PYTHONPATH']} " if os.environ.get("PYTHONPATH") else ""
    command = env_note + shlex.join([Path(sys.executable).name, *sys.argv])
    runs = []
    for rnd in range(args.rounds):
        for model in args.models:
            for batch in args.batch_sizes:
                # even rounds: xpcnn numpy-first, torch, xpcnn xpcnn-first; odd: torch, xpcnn-first, numpy-first
                jobs = [args.orders[0], None, *args.orders[1:]] if rnd % 2 == 0 else [None, *args.orders[::-1]]
                for order in jobs:
                    cfg = {"engine": "torch" if order is None else "xpcnn", "order": order, "model": model,
                           "batch": batch, "round": rnd, "path": root, "warmup": args.warmup, "seconds": args.seconds,
                           "input": list(args.input) if args.input and model in SHAPED else None}
                    runs += run_child(cfg, args.busy, args.retries)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.date.today()}-{socket.gethostname().split('.')[0]}-processes"
    stem += f"-{args.label}" if args.label else ""
    (args.out / f"{stem}.md").write_text(report(args, runs, root, command))
    (args.out / f"{stem}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    print(f"wrote {args.out / stem}.md and .jsonl", file=sys.stderr)


if __name__ == "__main__":
    main()
