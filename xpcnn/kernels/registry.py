"""The one decision point between a portable reference op and an accelerated kernel.

A reference op (in :mod:`xpcnn.ops`) is written once against the Array API and decorated with
:func:`dispatch`; a kernel for one backend registers itself for that op with :func:`register` and a
condition on the call's arguments. A call then runs the first registered kernel of the arrays' backend
whose condition holds, and the reference otherwise, or whenever ``xpcnn.settings(kernels=False)``.
A backend's kernels are imported the first time an op meets one of its arrays (``xpcnn.kernels.<backend>``),
so importing xpcnn loads no compiler.

    @dispatch("relu")                        # xpcnn/ops/activations.py
    def relu_forward(x): ...                 # the reference

    @register("relu", "numpy", when=float_arrays)   # xpcnn/kernels/numpy/elementwise.py
    def relu(x): ...                         # same signature, same result
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xpcnn.backend.namespaces import backend_of
from xpcnn.settings import current

#: Backends with a package of kernels, and that package.
PACKAGES = {"numpy": "xpcnn.kernels.numpy", "cupy": "xpcnn.kernels.cupy"}


@dataclass(frozen=True)
class Kernel:
    """An accelerated implementation of ``op`` for ``backend``, used where ``when(*args, **kwargs)`` holds."""

    op: str
    backend: str
    fn: Callable[..., Any]
    when: Callable[..., bool]

    @property
    def name(self) -> str:
        return f"{self.fn.__module__}.{self.fn.__qualname__}"


_TABLE: dict[tuple[str, str], list[Kernel]] = {}
_REFERENCES: dict[str, Callable[..., Any]] = {}
_loaded: set[str] = set()


def _always(*args: Any, **kwargs: Any) -> bool:
    return True


def register(op: str, backend: str, when: Callable[..., bool] = _always) -> Callable[[Callable], Callable]:
    """Decorator: ``fn`` implements ``op`` on ``backend`` arrays wherever ``when`` (same arguments) holds."""
    def add(fn: Callable) -> Callable:
        _TABLE.setdefault((op, backend), []).append(Kernel(op, backend, fn, when))
        return fn
    return add


def find(op: str, backend: str, *args: Any, **kwargs: Any) -> Callable[..., Any] | None:
    """The kernel that runs ``op(*args, **kwargs)`` on ``backend``, or None for the reference."""
    if not current().kernels:
        return None
    if backend not in _loaded:
        _load(backend)
    for kernel in _TABLE.get((op, backend), ()):
        if kernel.when(*args, **kwargs):
            return kernel.fn
    return None


def dispatch(op: str) -> Callable[[Callable], Callable]:
    """Decorator for a reference op: calls run :func:`find`'s kernel for the first argument's backend
    where there is one. The undecorated reference stays reachable as ``.reference`` (for tests)."""
    def wrap(reference: Callable) -> Callable:
        _REFERENCES[op] = reference

        @functools.wraps(reference)
        def run(*args: Any, **kwargs: Any) -> Any:
            kernel = find(op, backend_of(args[0]), *args, **kwargs)
            return (kernel or reference)(*args, **kwargs)
        run.reference = reference  # type: ignore[attr-defined]
        run.op = op  # type: ignore[attr-defined]
        return run
    return wrap


def kernels(backend: str | None = None) -> list[Kernel]:
    """Every registered kernel (of ``backend``, if given), loading the backends' kernel packages."""
    for name in PACKAGES if backend is None else (backend,):
        if name not in _loaded:
            _load(name)
    return [k for (_, b), ks in _TABLE.items() for k in ks if backend in (None, b)]


def references() -> dict[str, Callable[..., Any]]:
    """The reference op of every dispatched op name."""
    return dict(_REFERENCES)


def _load(backend: str) -> None:
    _loaded.add(backend)
    if backend in PACKAGES:
        importlib.import_module(PACKAGES[backend])


def compile_seconds() -> float:
    """Seconds this process has spent compiling kernels so far (a trainer leaves them out of its img/s)."""
    numpy_kernels = sys.modules.get(PACKAGES["numpy"] + ".generated")
    return numpy_kernels.compile_seconds() if numpy_kernels is not None else 0.0


def step_scope(x: Any) -> Any:
    """The context a model's step runs in for ``x``'s backend: on NumPy, OpenBLAS held to one thread
    while the worker threads run (:func:`xpcnn.kernels.numpy.threads.single_threaded_blas`); elsewhere,
    or with kernels off, nothing."""
    backend = backend_of(x)
    if backend != "numpy" or not current().kernels:
        return contextlib.nullcontext()
    from xpcnn.kernels.numpy.threads import single_threaded_blas
    return single_threaded_blas()
