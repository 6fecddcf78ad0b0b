"""Device specs ("cpu", "cuda", "cuda:N", or a backend's own device object) and moving arrays.

A :class:`Placement` names where a model lives: a backend, its namespace and a device.
:func:`move` carries any supported array there (through DLPack between GPU libraries,
through host memory otherwise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from xpcnn.backend.namespaces import backend_name, check_backend_name, namespace_for
from xpcnn.errors import BackendUnavailableError, DeviceUnavailableError

_CUDA_SPEC = re.compile(r"^cuda(?::(\d+))?$")


@dataclass(frozen=True)
class Placement:
    """Where arrays live: ``backend`` name, its namespace ``xp`` and native ``device``."""

    backend: str
    xp: Any
    device: Any
    kind: str  # "cpu" or "cuda"
    index: int = 0

    def __str__(self) -> str:
        where = "cpu" if self.kind == "cpu" else f"cuda:{self.index}"
        if self.backend == "array_api_strict":
            where = str(self.device).split("'")[1] if "'" in str(self.device) else str(self.device)
        return f"{self.backend} on {where}"


def _parse(device: Any) -> tuple[str, int | str]:
    """Split a device spec into ("cpu", 0), ("cuda", N) or ("named", name)."""
    if isinstance(device, str):
        spec = device.strip().lower()
        if spec == "cpu":
            return "cpu", 0
        match = _CUDA_SPEC.match(spec)
        if match:
            return "cuda", int(match.group(1) or 0)
        if spec == "gpu":
            return "cuda", 0
        return "named", device.strip()
    # A backend's own device object.
    text = str(device)
    kind = getattr(device, "type", None) or getattr(device, "platform", None)
    if kind == "cpu" or text.lower().startswith("cpu"):
        return "cpu", 0
    if kind in ("cuda", "gpu") or "cuda" in text.lower() or type(device).__module__.startswith("cupy"):
        index = getattr(device, "index", None)
        if index is None:
            index = getattr(device, "id", 0)
        return "cuda", int(index or 0)
    return "named", device


def _default_backend(kind: str) -> str:
    return "cupy" if kind == "cuda" else "numpy"


def _cuda_count(backend: str) -> int:
    if backend == "cupy":
        import cupy
        if not cupy.cuda.is_available():  # never raises, unlike getDeviceCount
            return 0
        return int(cupy.cuda.runtime.getDeviceCount())
    if backend == "torch":
        import torch
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    if backend == "jax":
        import jax
        try:
            return len(jax.devices("gpu"))
        except RuntimeError:
            return 0
    return 0


def resolve(device: Any = "cpu", backend: str | None = None) -> Placement:
    """Turn a device spec and optional backend name into a validated :class:`Placement`.

    ``"cpu"`` defaults to numpy and ``"cuda"``/``"cuda:N"`` to cupy; ``backend`` may pick
    ``numpy``, ``cupy``, ``torch``, ``jax`` or ``array_api_strict``. Raises
    :class:`DeviceUnavailableError` or :class:`BackendUnavailableError` with what to do.
    """
    kind, index = _parse(device)
    if kind == "named" and backend in (None, "array_api_strict"):
        backend = "array_api_strict"
    elif kind == "named":
        raise DeviceUnavailableError(
            f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N' "
            f"(array_api_strict also takes its own device names such as 'device1')")
    backend = check_backend_name(backend or _default_backend(kind))
    if backend == "numpy" and kind == "cuda":
        raise DeviceUnavailableError(
            f"numpy runs on the CPU only, but device {device!r} was asked for; "
            "use backend='cupy' or backend='torch' for CUDA, or device='cpu'")
    if backend == "cupy" and kind == "cpu":
        raise DeviceUnavailableError(
            "cupy runs on CUDA GPUs only; use device='cuda' with cupy, or backend='numpy' for the CPU")
    if backend == "array_api_strict" and kind == "cuda":
        raise DeviceUnavailableError("array_api_strict has no CUDA devices; use device='cpu' or 'device1'")
    try:
        xp = namespace_for(backend)
    except BackendUnavailableError:
        if kind == "cuda":
            raise DeviceUnavailableError(
                f"CUDA was asked for ({device!r}) but {backend} is not installed; "
                "install CuPy with pip install 'xpcnn[cuda12]' (or [cuda13]), or train with device='cpu'"
            ) from None
        raise
    if kind == "cuda":
        count = _cuda_count(backend)
        if count == 0:
            raise DeviceUnavailableError(
                f"no CUDA device: {backend} sees no usable NVIDIA GPU here; "
                "check the driver with nvidia-smi, or train with device='cpu'")
        if index >= count:
            raise DeviceUnavailableError(
                f"device cuda:{index} does not exist: {backend} sees {count} GPU(s), "
                f"cuda:0 to cuda:{count - 1}")
    return Placement(backend, xp, _native_device(backend, kind, index, device), "cpu" if kind == "named" else kind,
                     index if isinstance(index, int) else 0)


def _native_device(backend: str, kind: str, index: Any, original: Any) -> Any:
    if not isinstance(original, str):
        return original
    if backend == "numpy":
        return "cpu"
    if backend == "cupy":
        import cupy
        return cupy.cuda.Device(index)
    if backend == "torch":
        import torch
        return torch.device("cpu") if kind == "cpu" else torch.device("cuda", index)
    if backend == "jax":
        import jax
        return jax.devices("cpu")[0] if kind == "cpu" else jax.devices("gpu")[index]
    import array_api_strict
    if kind == "cpu":
        return array_api_strict.Device("CPU_DEVICE")
    try:
        return array_api_strict.Device(str(index))
    except ValueError:
        names = ", ".join(str(d) for d in array_api_strict.__array_namespace_info__().devices())
        raise DeviceUnavailableError(
            f"unknown device {index!r}; use 'cpu', 'cuda' or 'cuda:N' "
            f"(array_api_strict also takes one of its own: {names})") from None


def placement_of(x: Any) -> Placement:
    """The :class:`Placement` of an existing array."""
    xp = array_api_compat.array_namespace(x)
    name = backend_name(xp)
    dev = array_api_compat.device(x)
    kind, index = _parse(dev) if name != "numpy" else ("cpu", 0)
    if name == "array_api_strict":
        kind, index = "cpu", 0
    return Placement(name, xp, dev, kind, index if isinstance(index, int) else 0)


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy (or view, for NumPy input) of array ``x`` from any backend, on the host."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_array_api_strict_namespace(array_api_compat.array_namespace(x)):
        import array_api_strict
        return np.from_dlpack(x.to_device(array_api_strict.Device("CPU_DEVICE")))
    return np.asarray(x)


def move(x: Any, where: Placement) -> Any:
    """Array ``x`` (any backend, any device) as an array of ``where``'s backend and device."""
    source = backend_name(array_api_compat.array_namespace(x)) if not isinstance(x, np.ndarray) else "numpy"
    if source == where.backend:
        if source == "numpy":
            return x
        return array_api_compat.to_device(x, where.device)
    if where.kind == "cuda" and source in ("cupy", "torch") and where.backend in ("cupy", "torch"):
        return where.xp.from_dlpack(x)  # GPU to GPU without a host round trip
    return from_numpy(to_numpy(x), where)


def from_numpy(host: np.ndarray, where: Placement) -> Any:
    """NumPy array ``host`` as an array of ``where``'s backend and device."""
    if where.backend == "numpy":
        return host
    if where.backend == "cupy":
        import cupy
        with cupy.cuda.Device(where.index):
            return cupy.asarray(host)
    if where.backend == "torch":
        import torch
        return torch.as_tensor(np.ascontiguousarray(host), device=where.device)
    if where.backend == "jax":
        import jax
        return jax.device_put(host, where.device)
    return where.xp.asarray(host, device=where.device)
