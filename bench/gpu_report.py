"""Helpers of issue 15's GPU check (bench/gpu_prepare.sh, bench/gpu_check.sh); standard library only.

    python bench/gpu_report.py wheels DIR          # every wheel's requirements: in DIR or on the GPU machine?
    python bench/gpu_report.py sha256 DIR          # Fashion-MNIST files against xpcnn's SHA-256 list, then load them
    python bench/gpu_report.py versions OUT.json   # Python, NumPy, CuPy, PyTorch, CUDA, ... as JSON
    python bench/gpu_report.py report OUTDIR       # OUTDIR/report.md from what gpu_check.sh left in OUTDIR
"""

from __future__ import annotations

import datetime
import email.parser
import hashlib
import importlib
import importlib.metadata
import json
import platform
import re
import socket
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: What the GPU machine already has (the brief of issue 15): these need no wheel in .gpu/wheels.
ON_GPU_MACHINE = {"numpy", "numba", "llvmlite", "cupy-cuda13x", "fastrlock", "torch", "pytest", "hypothesis",
                  "iniconfig", "pluggy", "attrs", "sortedcontainers"}
#: Markers of the GPU machine, for wheels' conditional requirements.
GPU_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
               "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
               "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}

#: Recorded CPU accuracy runs (bench/results/accuracy.md: batch 128, Adam lr 1e-3, seed 0), per epoch.
RECORDED = {"xpcnn NumPy CPU (accuracy.md)": "bench/results/fashion-mnist/mnist-cnn-history.jsonl",
            "PyTorch CPU twin (accuracy.md)": "bench/results/fashion-mnist/pytorch-mnist-cnn.jsonl"}

#: What a machine without a GPU cannot show; the report repeats it (see issue 15).
UNVERIFIED = """\
1. **The CUDA tests** (`XPCNN_TEST_BACKENDS=cupy,torch-cuda`, 350 of them: every layer's backward against
   finite differences in float64 (156) and against PyTorch autograd (156), the presets (26) and the fusion plan
   (12), on CuPy and on torch-CUDA arrays): on a CPU machine all of them skip with "no CUDA device", so not one
   CuPy or torch-CUDA code path of xpcnn has been executed. (The property tests run on NumPy only.)
2. **Training on CUDA end to end**: data moved to the GPU, CuPy's dropout RNG (`CupyLibrary.uniform`), Adam on
   CuPy arrays, checkpoints written from GPU arrays and read back, `evaluate --device cuda`; and that the
   accuracy after 2 epochs matches the CPU's (expected: within about a point of the recorded CPU run's epoch 2;
   the dropout masks come from another generator, so the runs are not bit-identical).
3. **GPU timings and memory**: `xpcnn bench --device cuda` synchronizes with `cupy.cuda.Device.synchronize` and
   `torch.cuda.synchronize` (in the code, never timed on a GPU). Its peak-memory columns are not like for like:
   xpcnn on CuPy reports `cupy.get_default_memory_pool().total_bytes()` after the timing (the pool's reserved
   bytes, freed blocks it caches included, and at the first batch size the 2 x 4 MiB of the matmul-peak probe),
   PyTorch `torch.cuda.max_memory_allocated` (a high-water mark of live tensors). The CuPy figure is closer to
   PyTorch's `max_memory_reserved`. `measure()` resets only the xpcnn placement's counter, never PyTorch's when
   xpcnn runs on CuPy (`TorchTrainStep.reset_peak_memory` is never called), so PyTorch's figure is the process's
   maximum so far: right for ascending batch sizes (32 128 1024, as here), wrong for any other order. With
   `--backend torch --device cuda` both engines share one allocator, so each figure includes the other's tensors.
4. **GPU-blind tests**: `tests/test_cli.py::test_bad_input_gets_one_clear_line` expects
   `xpcnn train --device cuda ...` to fail with "CUDA"; on a GPU machine it trains (3 epochs of seed-deep,
   into `runs/` of the working directory) and the test should fail. `tests/test_devices.py` skips its
   no-GPU checks when a GPU is present (by design).
5. **The offline install**: that `.gpu/wheels` (downloaded for CPython 3.12, manylinux x86-64, requirements
   checked from the wheels' metadata only) installs and imports on the GPU machine's Python next to its own
   NumPy, numba, CuPy 14 (CUDA 13) and PyTorch; and that the whole script fits its time budget there.
6. **Not covered even by a GPU run of this script**: a second GPU (`cuda:1`), CuPy for CUDA 12
   (`xpcnn[cuda12]`), JAX on CUDA, CuPy kernels (there are none yet: every op runs its portable reference on
   CuPy), and the PyTorch-twin accuracy comparison on the GPU.
"""


# --------------------------------------------------------------------------------------------- wheels
def _requirement_parser():
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.requirements import Requirement
    return Requirement


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheels(folder: str) -> int:
    """Print each wheel's unconditional requirements (for the GPU machine's markers) that neither a wheel in
    ``folder`` nor the GPU machine provides; exit status 1 when there is one."""
    Requirement = _requirement_parser()
    paths = sorted(Path(folder).glob("*.whl"))
    have = {_normal(p.name.split("-")[0]) for p in paths} | ON_GPU_MACHINE
    missing = []
    for path in paths:
        with zipfile.ZipFile(path) as archive:
            meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            meta = email.parser.Parser().parsestr(archive.read(meta_name).decode())
        for text in meta.get_all("Requires-Dist") or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(GPU_MARKERS):
                continue
            if _normal(req.name) not in have:
                missing.append(f"{path.name} needs {text}")
    print(f"{len(paths)} wheels: " + ", ".join(p.name for p in paths))
    for line in missing:
        print(f"missing: {line}")
    print("every requirement is met" if not missing else f"{len(missing)} requirement(s) not met")
    return 1 if missing else 0


# --------------------------------------------------------------------------------------------- data
def sha256(folder: str) -> int:
    """Check the Fashion-MNIST files in ``folder`` against ``DATASETS["fashion-mnist"].sha256`` (known for the
    ``.gz`` files), then load them; exit status 1 on a mismatch or a load failure."""
    sys.path.insert(0, str(ROOT))
    from xpcnn.data import datasets
    info = datasets.DATASETS["fashion-mnist"]
    status = 0
    for part, stem in datasets.FILES.items():
        path = next((p for p in (Path(folder) / (stem + ".gz"), Path(folder) / stem) if p.is_file()), None)
        if path is None:
            print(f"missing: {stem}[.gz]")
            status = 1
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if path.suffix != ".gz":
            print(f"unchecked (no known SHA-256 of the uncompressed file): {path.name} {digest}")
        elif digest == info.sha256[part]:
            print(f"sha256 ok: {path.name}")
        else:
            print(f"SHA-256 MISMATCH: {path.name} is {digest}, expected {info.sha256[part]}")
            status = 1
    if status == 0:
        try:
            train, test = datasets.load("fashion-mnist", data_dir=folder, download=False)
        except Exception as exc:  # noqa: BLE001 - say why in one line
            print(f"load failed: {type(exc).__name__}: {exc}")
            return 1
        print(f"loaded: {len(train)} train {tuple(train.images.shape)}, {len(test)} test {tuple(test.images.shape)}")
    return status


# --------------------------------------------------------------------------------------------- versions
def _dist(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _try(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - recorded, not raised
        return f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def _cupy() -> dict:
    import cupy
    rt = cupy.cuda.runtime
    out = {"version": cupy.__version__, "cuda_runtime": rt.runtimeGetVersion(), "cuda_driver": rt.driverGetVersion()}
    out["devices"] = rt.getDeviceCount()
    props = rt.getDeviceProperties(0)
    out["device0"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    out["compute_capability"] = f"{props['major']}.{props['minor']}"
    out["memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
    return out


def _torch() -> dict:
    import torch
    out = {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if out["cuda_available"]:
        out["device0"] = torch.cuda.get_device_name(0)
        out["cudnn"] = torch.backends.cudnn.version()
    return out


def versions(path: str) -> int:
    """Write the versions that matter for the GPU check as JSON to ``path`` (each failure recorded as text)."""
    info: dict = {"python": sys.version.split()[0], "executable": sys.executable, "host": socket.gethostname(),
                  "platform": platform.platform()}
    for name in ("numpy", "numba", "llvmlite", "array-api-compat", "array-api-strict", "pooch", "tqdm",
                 "threadpoolctl", "requests", "pytest", "hypothesis", "jax", "cupy-cuda13x", "cupy-cuda12x"):
        info[name] = _dist(name) or "not installed"
    info["cupy"] = _try(_cupy)
    info["torch"] = _try(_torch)
    info["xpcnn"] = _try(lambda: {"version": importlib.import_module("xpcnn").__version__,
                                  "file": importlib.import_module("xpcnn").__file__,
                                  "requires": importlib.metadata.requires("xpcnn")})
    # xpcnn's own requirements import?
    missing = []
    for module in ("numpy", "array_api_compat", "tqdm", "pooch", "numba", "threadpoolctl", "array_api_strict"):
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001
            missing.append(f"{module}: {type(exc).__name__}: {exc}")
    info["imports_missing"] = missing
    commit = ROOT / ".git"
    info["checkout_has_git"] = commit.exists()
    Path(path).write_text(json.dumps(info, indent=1, default=str) + "\n")
    print(json.dumps(info, indent=1, default=str))
    return 0


# --------------------------------------------------------------------------------------------- report
def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _json_lines(path: Path) -> list[dict]:
    rows = []
    for line in _read(path).splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def _last_json(path: Path) -> dict | None:
    rows = _json_lines(path)
    return rows[-1] if rows else None


def _steps(out: Path) -> list[dict]:
    keys = ("name", "status", "rc", "seconds", "stdout", "stderr", "command", "note")
    rows = []
    for line in _read(out / "steps.tsv").splitlines():
        if line.strip():
            rows.append(dict(zip(keys, line.split("\t") + [""] * len(keys))))
    return rows


def _pytest_summary(text: str) -> str:
    lines = [ln.strip("= ").strip() for ln in text.splitlines()
             if re.search(r"\b(passed|failed|skipped|error|errors|deselected|no tests ran|tests? collected)\b", ln)
             and re.search(r"\d", ln) and " in " in ln]
    return lines[-1] if lines else "(no pytest summary line: see the output file)"


def _mib(value) -> str:
    return f"{value / 2**20:,.0f}" if isinstance(value, (int, float)) else "-"


def _num(value, fmt: str = ",.0f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def _versions_section(out: Path) -> list[str]:
    v = json.loads(_read(out / "versions.json") or "{}")
    smi = _read(out / "nvidia-smi.txt")
    driver = re.search(r"Driver Version:\s*([\d.]+)", smi)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", smi)
    cupy, torch = v.get("cupy"), v.get("torch")
    gpu = (cupy.get("device0") if isinstance(cupy, dict) else None) or \
          (torch.get("device0") if isinstance(torch, dict) else None) or "none found"
    rows = [("GPU", gpu), ("NVIDIA driver (nvidia-smi)", driver.group(1) if driver else "-"),
            ("CUDA (nvidia-smi: the driver's)", cuda.group(1) if cuda else "-"),
            ("CuPy", json.dumps(cupy) if cupy else "-"), ("PyTorch", json.dumps(torch) if torch else "-")]
    rows += [(k, v.get(k, "-")) for k in ("python", "numpy", "numba", "llvmlite", "array-api-compat",
                                          "array-api-strict", "pooch", "tqdm", "threadpoolctl", "pytest",
                                          "hypothesis", "jax")]
    rows += [("xpcnn", json.dumps(v.get("xpcnn"))), ("host", v.get("host", "-")), ("platform", v.get("platform", "-")),
             ("xpcnn requirements that fail to import", "; ".join(v.get("imports_missing", [])) or "none")]
    lines = ["## Machine and versions", "", "| what | version |", "|---|---|"]
    lines += [f"| {k} | {str(val).replace('|', '/')} |" for k, val in rows]
    if smi.strip():
        lines += ["", "<details><summary>nvidia-smi</summary>", "", "```", smi.rstrip(), "```", "</details>"]
    return lines


def _tests_section(out: Path, steps: list[dict]) -> list[str]:
    lines = ["## Tests", ""]
    for step in steps:
        if not step["name"].startswith("tests"):
            continue
        text = _read(out / step["stdout"]) if step["stdout"] else ""
        no_cuda = sum(int(n) for n in re.findall(r"^SKIPPED \[(\d+)\].*no CUDA device", text, re.MULTILINE))
        failed = [ln for ln in text.splitlines() if ln.startswith(("FAILED", "ERROR"))]
        lines.append(f"- `{step['name']}` ({step['status']}, {step['seconds']} s): {_pytest_summary(text)}"
                     + (f"; skipped with \"no CUDA device\": {no_cuda}" if no_cuda else ""))
        lines += [f"  - {ln}" for ln in failed[:20]]
    return lines


def _training_section(out: Path, steps: list[dict]) -> list[str]:
    lines = ["## Training and evaluation", ""]
    for name in ("train", "train-cpu"):
        result = _last_json(out / f"{name}.json")
        lines.append(f"- `{name}`: " + (f"test accuracy {result['test_accuracy']:.4f}, loss {result['test_loss']:.4f}"
                                        if result else f"no result (see {name}.log)"))
    evaluated = {name: _last_json(out / f"{name}.json") for name in ("evaluate", "evaluate-on-cpu")}
    for name, result in evaluated.items():
        lines.append(f"- `{name}` (of `run/best.npz`): " + (
            f"accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} on {result['images']} {result['dataset']} "
            "test images" if result else f"no result (see {name}.log)"))
    if all(evaluated.values()):
        a, b = (evaluated[n]["confusion_matrix"] for n in evaluated)
        moved = sum(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)) // 2
        lines.append(f"- the same checkpoint on both devices: {moved} test image(s) classified differently")
    history = _json_lines(out / "run" / "history.jsonl")
    if history:
        lines += ["", "Per epoch (`run/history.jsonl`; img/s includes data handling):", "",
                  "| run | epoch | loss | accuracy | val_loss | val_accuracy | img/s | seconds |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        series = [("this run: `train`", history),
                  ("this run: `train-cpu`", _json_lines(out / "run-cpu" / "history.jsonl"))]
        dataset = (_last_json(out / "evaluate.json") or {}).get("dataset")
        model = re.search(r"--model (\S+)", next((s["command"] for s in steps if s["name"] == "train"), ""))
        if dataset == "fashion-mnist" and model and model.group(1) == "mnist-cnn":
            series += [(label, _json_lines(ROOT / path)[:len(history)]) for label, path in RECORDED.items()]
        for label, rows in series:
            for r in rows:
                lines.append(f"| {label} | {r.get('epoch', '-')} | {_num(r.get('loss'), '.4f')} | "
                             f"{_num(r.get('accuracy'), '.4f')} | {_num(r.get('val_loss'), '.4f')} | "
                             f"{_num(r.get('val_accuracy', r.get('test_accuracy')), '.4f')} | "
                             f"{_num(r.get('images_per_s'))} | "
                             f"{_num(r.get('seconds'), '.1f')} |")
        if len(series) == 2:
            lines += ["", f"(dataset {dataset!r}: the recorded CPU runs of accuracy.md, mnist-cnn on Fashion-MNIST, "
                          "do not apply)"]
    return lines


def _bench_section(out: Path, mode: str) -> list[str]:
    rows = [r for path in sorted(out.glob("bench-*.jsonl")) for r in _json_lines(path)]
    lines = ["## xpcnn bench (training: forward + backward + Adam; synthetic 28x28 batches)", ""]
    if not rows:
        return lines + ["no bench results (see the bench-*.log files)"]
    lines += ["| model | batch | xpcnn on | train img/s | PyTorch train img/s | ratio | infer img/s | "
              "PyTorch infer img/s | infer ratio | train GFLOP/s | % of matmul peak | xpcnn peak MiB | "
              "PyTorch peak MiB |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['backend']}/{r['device']} | {_num(r['train_img_s'])} | "
                     f"{_num(r.get('reference_train_img_s'))} | {_num(r.get('ratio_vs_reference'), '.2f')} | "
                     f"{_num(r['infer_img_s'])} | {_num(r.get('reference_infer_img_s'))} | "
                     f"{_num(r.get('infer_ratio_vs_reference'), '.2f')} | {_num(r['train_gflop_s'], '.1f')} | "
                     f"{_num(100 * r['fraction_of_peak'], '.1f')} | {_mib(r.get('peak_memory_bytes'))} | "
                     f"{_mib(r.get('reference_peak_memory_bytes'))} |")
    first = rows[0]
    lines += ["", f"Medians of {first['repeats']} repeats of {first['steps']} steps, {first['settle_s']} s settle; "
              f"matmul peak {_num(first['matmul_peak_gflop_s'])} GFLOP/s (float32 1024x1024). Peak memory: see "
              "item 3 of the last section (CuPy pool bytes vs PyTorch max_memory_allocated)."]
    if mode == "dry-run":
        lines += ["", "Dry run: 1 step, 1 repeat, no settle, kernels off: these figures only show that the command "
                      "runs, they measure nothing."]
    return lines


def report(outdir: str) -> int:
    out = Path(outdir)
    steps = _steps(out)
    mode = _read(out / "mode").strip() or "unknown"
    prepared = _read(out / "prepared-commit").strip()
    lines = [f"# xpcnn on CUDA: gpu_check report ({mode})", "",
             f"- written {datetime.datetime.now().isoformat(timespec='seconds')} by `bench/gpu_check.sh`"
             + (" --dry-run: a CPU machine, every step on the CPU, nothing here concerns a GPU" if mode == "dry-run"
                else ""),
             f"- checkout: {_read(out / 'commit').strip() or 'unknown'}"
             + (f"; .gpu/ prepared at {prepared}" if prepared else ""),
             f"- {_read(out / 'kernels').strip() or 'XPCNN_KERNELS=?'}"
             + ("; the dry run trains seed-simple with the reference ops, so it needs no numba compilation"
                if mode == "dry-run" else ""),
             f"- budget {_read(out / 'budget').strip() or '?'} s; steps took "
             f"{sum(int(s['seconds'] or 0) for s in steps)} s in all",
             "- `xpcnn ...` below is `python -m xpcnn.cli.main ...` run from the checkout (PYTHONPATH puts the "
             "checkout first)", "",
             "## Steps", "", "| step | status | seconds | output | command |", "|---|---|---:|---|---|"]
    for s in steps:
        files = ", ".join(sorted({f for f in (s["stdout"], s["stderr"]) if f}))
        command = s["command"].strip().replace("|", "\\|")
        note = f" ({s['note']})" if s["note"] else ""
        lines.append(f"| {s['name']} | {s['status']}{note} | {s['seconds']} | {files} | `{command}` |")
    failures = [s for s in steps if s["status"] not in ("ok", "skipped")]
    if failures:
        lines += ["", "Failed steps, each with the last line of its output:", ""]
        for s in failures:
            text = _read(out / s["stderr"]) if s["stderr"] else ""
            text = text if text.strip() else (_read(out / s["stdout"]) if s["stdout"] else "")
            last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "(no output)")
            lines.append(f"- `{s['name']}` ({s['status']}, rc {s['rc']}): {last[:400]}")
    lines += [""] + _versions_section(out) + [""] + _tests_section(out, steps) + [""]
    lines += _training_section(out, steps) + [""] + _bench_section(out, mode) + [""]
    lines += ["## What is still unverified", ""]
    if mode == "dry-run":
        lines += ["This is a dry run: it proves only that every command of the script runs and that the CUDA "
                  "tests skip with \"no CUDA device\". Without a GPU none of the following has ever run; only a "
                  "run of `bench/gpu_check.sh` on the GPU machine shows it:", "", UNVERIFIED]
    else:
        lines += ["Before this run none of the following had run on a GPU. Items 1-5 are what this run is for: "
                  "check each against the sections above (a failed or skipped step leaves its item unverified). "
                  "Item 6 stays open.", "", UNVERIFIED]
    (out / "report.md").write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {out / 'report.md'}")
    return 0


def main(argv: list[str]) -> int:
    commands = {"wheels": wheels, "sha256": sha256, "versions": versions, "report": report}
    if len(argv) != 2 or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
