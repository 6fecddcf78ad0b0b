"""Which array library an array belongs to, and how to get its Array API namespace.

This package (``xpcnn.backend``) is the only place in xpcnn that names numpy, cupy,
torch or jax; everything else works on the namespace returned by :func:`namespace_of`.
"""

from __future__ import annotations

import importlib
from typing import Any

import array_api_compat
import numpy as np
from array_api_compat import numpy as compat_numpy

from xpcnn.errors import BackendMismatchError, BackendUnavailableError

#: Backends xpcnn knows, in the order ``xpcnn info`` lists them.
BACKENDS = ("numpy", "cupy", "torch", "jax", "array_api_strict")

_COMPAT_MODULE = {
    "numpy": "array_api_compat.numpy",
    "cupy": "array_api_compat.cupy",
    "torch": "array_api_compat.torch",
    "jax": "jax.numpy",
    "array_api_strict": "array_api_strict",
}
_LIBRARY = {"numpy": "numpy", "cupy": "cupy", "torch": "torch", "jax": "jax",
            "array_api_strict": "array_api_strict"}
_INSTALL_HINT = {
    "numpy": "pip install numpy",
    "cupy": "pip install 'xpcnn[cuda12]' (or [cuda13]) on a machine with an NVIDIA GPU",
    "torch": "pip install torch",
    "jax": "pip install jax",
    "array_api_strict": "pip install array-api-strict",
}


def check_backend_name(name: str) -> str:
    """Return ``name`` if it is a known backend, else raise a clear ValueError."""
    if name not in BACKENDS:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def namespace_for(name: str) -> Any:
    """The Array API namespace of backend ``name`` (imported on first use).

    Raises :class:`BackendUnavailableError` naming the pip command when the library is missing.
    """
    check_backend_name(name)
    try:
        importlib.import_module(_LIBRARY[name])
        return importlib.import_module(_COMPAT_MODULE[name])
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {name!r} is not installed ({exc}); install it with: {_INSTALL_HINT[name]}"
        ) from None


def check_dtype(name: str, dtype: str) -> None:
    """Raise ValueError where backend ``name`` cannot hold ``dtype`` as asked: JAX computes in float32
    unless its process-wide ``jax_enable_x64`` switch is on, which xpcnn never turns on by itself."""
    if name == "jax" and dtype == "float64":
        import jax
        if not jax.config.jax_enable_x64:
            raise ValueError("JAX holds float64 only with x64 enabled, a process-wide switch xpcnn leaves to you: "
                             "call jax.config.update('jax_enable_x64', True) first, or use dtype='float32'")


def accumulation_dtype(x: Any) -> Any:
    """The dtype to add up many of ``x``'s values in: float64 for a float32 ``x`` where its backend holds
    float64 (as PyTorch's CPU reductions accumulate float in double), else ``x.dtype`` (float64 input, and JAX
    without its x64 switch)."""
    xp = namespace_of(x)
    if x.dtype != xp.float32:
        return x.dtype
    if is_jax(xp):
        import jax
        if not jax.config.jax_enable_x64:
            return x.dtype
    return xp.float64


def is_available(name: str) -> bool:
    """True when backend ``name`` can be imported here (says nothing about GPUs)."""
    try:
        namespace_for(name)
        return True
    except BackendUnavailableError:
        return False


def backend_name(xp: Any) -> str:
    """The backend name (one of :data:`BACKENDS`) of namespace ``xp``."""
    checks = (("numpy", array_api_compat.is_numpy_namespace),
              ("cupy", array_api_compat.is_cupy_namespace),
              ("torch", array_api_compat.is_torch_namespace),
              ("jax", array_api_compat.is_jax_namespace),
              ("array_api_strict", array_api_compat.is_array_api_strict_namespace))
    for name, check in checks:
        if check(xp):
            return name
    raise BackendUnavailableError(f"namespace {getattr(xp, '__name__', xp)!r} is not a supported backend")


def namespace_of(*arrays: Any, where: str = "xpcnn") -> Any:
    """The Array API namespace shared by ``arrays``.

    Raises :class:`BackendMismatchError` (naming ``where``) if they come from different
    libraries or live on different devices.
    """
    # Plain NumPy arrays (all on the CPU) skip the general lookup, which costs ~6 us a call and
    # is called thousands of times a training step (about a tenth of a small preset's step).
    if all(type(a) is np.ndarray for a in arrays):
        return compat_numpy
    try:
        xp = array_api_compat.array_namespace(*arrays)
    except TypeError as exc:
        kinds = sorted({type(a).__module__.split(".")[0] + "." + type(a).__name__ for a in arrays})
        raise BackendMismatchError(
            f"{where}: arrays from different backends met ({', '.join(kinds)}); "
            f"move the model and the data to one backend with model.to(device, backend=...) "
            f"({exc})") from None
    devices = []
    for a in arrays:
        d = array_api_compat.device(a)
        if all(d != e for e in devices):
            devices.append(d)
    if len(devices) > 1:
        raise BackendMismatchError(
            f"{where}: arrays on different devices met ({', '.join(map(str, devices))}); "
            f"move the model and the data to one device with model.to(device)")
    return xp


def backend_of(x: Any) -> str:
    """The backend name (one of :data:`BACKENDS`) of array ``x``; NumPy arrays answer in one type check."""
    if type(x) is np.ndarray:
        return "numpy"
    try:
        return backend_name(array_api_compat.array_namespace(x))
    except (TypeError, BackendUnavailableError):
        return "other"


def device_of(x: Any) -> Any:
    """The device object of array ``x``."""
    return array_api_compat.device(x)


def is_jax(xp: Any) -> bool:
    """True for JAX, whose arrays cannot be written in place."""
    return array_api_compat.is_jax_namespace(xp)
