"""Device specs ("cpu", "cuda", "cuda:N", or a backend's own device object) and moving arrays.

A :class:`Placement` names where a model lives: a backend, its namespace and a device.
:func:`move` carries any supported array there (through DLPack between GPU libraries,
through host memory otherwise). What differs between array libraries is asked of their
:class:`~xpcnn.backend.libraries.Library` (``placement.library``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from xpcnn.backend.libraries import Library, library, library_of
from xpcnn.backend.namespaces import backend_name, check_backend_name, namespace_for
from xpcnn.errors import BackendUnavailableError, DeviceUnavailableError

_CUDA_SPEC = re.compile(r"^cuda(?::(\d+))?$")


@dataclass(frozen=True)
class Placement:
    """Where arrays live: ``backend`` name, its namespace ``xp`` and native ``device``.

    ``kind`` is ``"cpu"`` or ``"cuda"``; ``index`` the CUDA ordinal (0 on the CPU). Build one with
    :func:`resolve` (from a device spec) or :func:`placement_of` (from an array).
    """

    backend: str
    xp: Any
    device: Any
    kind: str  # "cpu" or "cuda"
    index: int = 0

    @property
    def library(self) -> Library:
        """The :class:`~xpcnn.backend.libraries.Library` of ``backend``: moves, syncs, draws and measures."""
        return library(self.backend)

    def __str__(self) -> str:
        return f"{self.backend} on {self.library.describe(self)}"


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


def resolve(device: Any = "cpu", backend: str | None = None) -> Placement:
    """Turn a device spec and optional backend name into a validated :class:`Placement`.

    ``device`` is ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (``"gpu"`` means ``"cuda:0"``), a backend's own
    device object, or one of array_api_strict's device names (``"device1"``). ``"cpu"`` defaults
    to numpy and ``"cuda"``/``"cuda:N"`` to cupy; ``backend`` may pick ``numpy``, ``cupy``,
    ``torch``, ``jax`` or ``array_api_strict``. Imports the backend's library.

    Raises :class:`DeviceUnavailableError` for an unknown device, a device kind the backend cannot
    use, a CUDA backend that is not installed (naming it and how to install it), or no (or too few)
    CUDA devices (the message starts with "no CUDA device" or says which exist);
    :class:`BackendUnavailableError` for an unknown backend, or a missing one on the CPU.
    """
    kind, index = _parse(device)
    if kind == "named" and backend in (None, "array_api_strict"):
        backend = "array_api_strict"
    elif kind == "named":
        raise DeviceUnavailableError(
            f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N' "
            f"(array_api_strict also takes its own device names such as 'device1')")
    backend = check_backend_name(backend or _default_backend(kind))
    lib = library(backend)
    refusal = lib.refusal(kind, device)
    if refusal is not None:
        raise DeviceUnavailableError(refusal)
    try:
        xp = namespace_for(backend)
    except BackendUnavailableError:
        if kind == "cuda":
            raise DeviceUnavailableError(lib.not_installed_for_cuda(device)) from None
        raise
    if kind == "cuda":
        count = lib.cuda_count()
        if count == 0:
            raise DeviceUnavailableError(lib.no_cuda_device())
        if index >= count:
            raise DeviceUnavailableError(
                f"device cuda:{index} does not exist: {backend} sees {count} GPU(s), "
                f"cuda:0 to cuda:{count - 1}")
    return Placement(backend, xp, lib.native_device(kind, index, device), "cpu" if kind == "named" else kind,
                     index if isinstance(index, int) else 0)


def placement_of(x: Any) -> Placement:
    """The :class:`Placement` of an existing array ``x`` (any supported backend).

    Raises TypeError when ``x`` is not an array, :class:`BackendUnavailableError` when its library
    is not supported.
    """
    xp = array_api_compat.array_namespace(x)
    lib = library(backend_name(xp))
    dev = array_api_compat.device(x)
    kind, index = _parse(dev) if lib.runs_on_cuda else ("cpu", 0)
    return Placement(lib.name, xp, dev, kind, index if isinstance(index, int) else 0)


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy (or view, for NumPy input) of array ``x`` from any backend, on the host.

    Same shape and dtype. Raises TypeError when ``x`` is not an array; an array of an unsupported
    Array API library goes through ``np.asarray``.
    """
    if isinstance(x, np.ndarray):
        return x
    try:
        lib = library_of(x)
    except BackendUnavailableError:
        return np.asarray(x)
    return lib.to_numpy(x)


def move(x: Any, where: Placement) -> Any:
    """Array ``x`` (any backend, any device) as an array of ``where``'s backend and device.

    ``x`` itself when it is already there (always, for NumPy to NumPy); same shape and dtype.
    Between CuPy and torch on CUDA the data goes through DLPack, staying on the GPU; otherwise
    through a NumPy copy on the host. Raises TypeError or :class:`BackendUnavailableError` as
    :func:`placement_of` does.
    """
    source = library_of(x)
    target = where.library
    if source is target:
        return source.to_device(x, where.device)
    if where.kind == "cuda" and source.gpu_dlpack and target.gpu_dlpack:
        return where.xp.from_dlpack(x)  # GPU to GPU without a host round trip
    return target.from_numpy(to_numpy(x), where)


def from_numpy(host: np.ndarray, where: Placement) -> Any:
    """NumPy array ``host`` as an array of ``where``'s backend and device; same shape and dtype.

    NumPy placements get ``host`` itself; others a copy (torch's of a contiguous copy).
    """
    return where.library.from_numpy(host, where)
