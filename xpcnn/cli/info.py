"""``xpcnn info``: the backends and devices available here, with versions."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform

from xpcnn import __version__
from xpcnn import backend as B
from xpcnn.errors import XpcnnError

_DISTRIBUTIONS = {"numpy": ["numpy"], "cupy": ["cupy-cuda12x", "cupy-cuda13x", "cupy"], "torch": ["torch"],
                  "jax": ["jax"], "array_api_strict": ["array-api-strict"]}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="list the backends and devices available here")
    p.set_defaults(run=run)


def _version(backend: str) -> str | None:
    for dist in _DISTRIBUTIONS[backend]:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def run(args: argparse.Namespace) -> int:
    print(f"xpcnn {__version__}, Python {platform.python_version()} on {platform.machine()} "
          f"({platform.system()})")
    for name in B.BACKENDS:
        version = _version(name)
        if version is None or not B.is_available(name):
            print(f"  {name:<17} not installed")
            continue
        devices = []
        for spec in (["cpu"] if name not in ("cupy",) else []) + (["cuda"] if name in ("cupy", "torch", "jax") else []):
            try:
                devices.append(str(B.resolve(spec, name)).split(" on ")[1])
            except XpcnnError as exc:
                if spec == "cuda":
                    devices.append("no CUDA device" if "no CUDA device" in str(exc) else f"cuda unavailable ({exc})")
        if name == "array_api_strict":
            devices = ["CPU_DEVICE", "device1", "device2"]
        print(f"  {name:<17} {version:<10} {', '.join(devices)}")
    _print_kernels()
    return 0


def _print_kernels() -> None:
    """Which accelerated kernels and settings a NumPy step runs with here."""
    from xpcnn.kernels import kernels
    from xpcnn.kernels.numpy import compiled, threads
    from xpcnn.settings import current
    settings = current()
    ops = sorted({k.op for k in kernels("numpy")})
    state = "on" if settings.kernels else "off (XPCNN_KERNELS=0: the reference ops run)"
    print(f"kernels: {state}; NumPy kernels for {', '.join(ops)}")
    numba = _distribution_version("numba")
    if numba:
        print(f"  numba {numba}: compiled kernels with {compiled.vector_lanes() * 32}-bit vectors")
    else:
        print("  numba: not installed (no compiled kernels: pip install numba)")
    if threads._blas_libraries() is None:
        print("  worker threads: off (threadpoolctl is not installed: pip install threadpoolctl)")
    else:
        print(f"  worker threads: {threads.workers()} (XPCNN_NUM_THREADS to change); OpenBLAS held to one thread "
              "during a step")


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
