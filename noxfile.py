"""nox sessions: tests per backend, benchmarks per backend, the xpcnn/PyTorch comparison and the backend report.

    nox -s "tests(backend='numpy')"     # one backend's tests
    nox -s tests                        # every CPU backend
    nox -s tests_cupy-cuda12            # on a machine with an NVIDIA GPU
    nox -s "bench(backend='numpy')"     # xpcnn vs native PyTorch, every preset
    nox -s compare                      # headline: xpcnn vs PyTorch training, fresh process per run
    nox -s compare -- --smoke           # the same as a quick dry run (one preset, one batch size)
    nox -s backends                     # every backend: the full table + chart under bench/results/
    nox -s scaling                      # cost vs batch size and image size, with peak memory
    nox -s gpu_check -- OUTDIR          # issue 15's CUDA proof (bench/gpu_check.sh; --dry-run on a CPU machine)
    nox -s distributed                  # data-parallel training: 2-rank MPI jobs on loopback (mpiexec -n 2)
"""

from __future__ import annotations

import shutil
import subprocess

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

TORCH = "torch==2.13.0"  # the local CPU wheel; a bare `torch` would pull a multi-GB CUDA build
PRESETS = ["seed-simple", "seed-deep", "mnist-cnn", "lenet5", "resnet20", "fastnet"]  # 1x28x28; the last two 3x32x32


def install(session: nox.Session, *extras: str) -> None:
    session.install(TORCH)
    session.install("-e", f".[{','.join(extras)}]" if extras else ".")


@nox.session
@nox.parametrize("backend", ["numpy", "array_api_strict", "torch", "jax"])
def tests(session: nox.Session, backend: str) -> None:
    """The test suite with its backend-generic tests restricted to one backend."""
    install(session, "test")
    session.run("python", "-m", "pytest", *session.posargs, env={"XPCNN_TEST_BACKENDS": backend})


@nox.session(name="tests_cupy")
@nox.parametrize("cuda", ["cuda12", "cuda13"])
def tests_cupy(session: nox.Session, cuda: str) -> None:
    """CuPy tests (skips the session where no NVIDIA GPU is present)."""
    if shutil.which("nvidia-smi") is None or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode:
        session.skip("no CUDA device")
    install(session, "test", cuda)
    session.run("python", "-m", "pytest", *session.posargs, env={"XPCNN_TEST_BACKENDS": "cupy,torch-cuda"})


@nox.session
def distributed(session: nox.Session) -> None:
    """Data-parallel training on mpi4py and MPICH's wheel: tests/test_distributed.py, whose jobs run under
    `mpiexec -n 2` on loopback (as root under Open MPI they pass its allow-run-as-root and oversubscribe switches)."""
    install(session, "test", "distributed")
    session.run("python", "-m", "pytest", "tests/test_distributed.py", *session.posargs,
                env={"XPCNN_TEST_ACCEL": "threads2"})


@nox.session
@nox.parametrize("backend", ["numpy", "torch", "jax", "array_api_strict"])
def bench(session: nox.Session, backend: str) -> None:
    """xpcnn on one backend against native PyTorch, every preset at batch 32 and 128."""
    install(session, "bench")
    if backend == "jax":
        session.install("jax")
    if backend == "array_api_strict":
        session.install("array-api-strict")
    for model in PRESETS:
        session.run("xpcnn", "bench", "--model", model, "--batch-size", "32", "128", "--backend", backend,
                    *session.posargs)


@nox.session
def compare(session: nox.Session) -> None:
    """The headline comparison: xpcnn vs native PyTorch training, each run in its own fresh process, every preset
    on its own input shape (resnet20 and fastnet on 3x32x32; `-- --input CxHxW` changes theirs)."""
    install(session, "bench")
    models = [] if "--models" in session.posargs else ["--models", *PRESETS]
    session.run("python", "bench/processes.py", *models, *session.posargs)


@nox.session
def backends(session: nox.Session) -> None:
    """Every preset at batch 1/32/128/512 on every available backend: table + chart in bench/results/."""
    install(session, "bench")
    session.install("jax", "array-api-strict")
    session.run("python", "bench/compare.py", *session.posargs)


@nox.session
def scaling(session: nox.Session) -> None:
    """Cost vs batch size (1-1024, mnist-cnn) and image size (28-224, one conv layer), with peak memory."""
    install(session, "bench")
    session.run("python", "bench/scaling.py", *session.posargs)


@nox.session(python=False)
def gpu_check(session: nox.Session) -> None:
    """Issue 15's one-command CUDA proof, bench/gpu_check.sh, in the current environment (on the GPU machine its
    own CuPy and PyTorch; the wheels of bench/gpu_prepare.sh go in beside them). Arguments: OUTDIR [--dry-run];
    none: runs/gpu-check, as a dry run where no NVIDIA GPU answers."""
    args = list(session.posargs)
    if not args:
        gpu = shutil.which("nvidia-smi") and not subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode
        args = ["runs/gpu-check"] + ([] if gpu else ["--dry-run"])
    session.run("bash", "bench/gpu_check.sh", *args, external=True)
