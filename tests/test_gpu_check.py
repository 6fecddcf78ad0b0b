"""bench/gpu_check.sh --dry-run (issue 15): the GPU check's every command runs on a CPU machine, so the script
cannot rot between the rare runs on a GPU. About 30 s on a 2-core machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

STEPS = ["install", "manifest", "nvidia-smi", "versions", "xpcnn-info", "data", "tests-cuda", "train", "evaluate",
         "evaluate-on-cpu", "bench-seed-simple", "tests-gpu-aware", "train-cpu", "tests-rest"]
SECTIONS = ["## Steps", "## Machine and versions", "## Tests", "## Training and evaluation", "## xpcnn bench",
            "## What is still unverified"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One dry run for the whole module (the accelerator parametrization repeats the tests, not the run)."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed: bench/gpu_check.sh needs it")
    if shutil.which("timeout") is None:
        pytest.skip("coreutils' timeout is not installed: bench/gpu_check.sh needs it")
    if os.environ.get("XPCNN_GPU_CHECK"):
        pytest.skip("inside bench/gpu_check.sh's own test run")
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PYTHON": sys.executable, "XPCNN_GPU_DIR": str(out / "no-prepared-dir")}
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(out), "--dry-run"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    return result, out


def test_dry_run_writes_a_report_naming_every_step(dry_run) -> None:
    result, out = dry_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "(dry-run)" in report
    for step in STEPS:
        assert f"| {step} |" in report, step
    for section in SECTIONS:
        assert section in report, section
    assert "failed" not in (out / "steps.tsv").read_text()


def test_dry_run_runs_the_cuda_tests_which_skip_without_a_gpu(dry_run) -> None:
    _, out = dry_run
    tests = (out / "tests.txt").read_text()
    if shutil.which("nvidia-smi") is None:
        assert "no CUDA device" in tests and " skipped" in tests
        assert "skipped with \"no CUDA device\"" in (out / "report.md").read_text()


def test_dry_run_trains_evaluates_and_benchmarks(dry_run) -> None:
    _, out = dry_run
    assert (out / "run" / "history.jsonl").is_file() and not list(out.glob("run*/*.npz"))  # checkpoints deleted
    report = (out / "report.md").read_text()
    assert "- `train`: test accuracy" in report and "- `evaluate` (of `run/best.npz`): accuracy" in report
    assert "| seed-simple | 32 | numpy/cpu |" in report
