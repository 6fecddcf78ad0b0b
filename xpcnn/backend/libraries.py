"""One small class per array library: what xpcnn must know about numpy, cupy, torch, jax and array_api_strict.

Each :class:`Library` answers the questions whose answer depends on the library: how many CUDA
devices it sees, its native device object for a spec, how to bring a NumPy array in and out, how to
wait for queued work, how to draw seeded random numbers, and where it reports peak device memory.
:func:`library` looks one up by backend name, :func:`library_of` by array.

:mod:`xpcnn.backend.devices`, :mod:`xpcnn.backend.random` and :mod:`xpcnn.backend.profiling` keep
their public functions; they delegate to ``placement.library``. Every import of cupy, torch, jax or
array_api_strict stays inside a method, so importing xpcnn imports none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import array_api_compat
import numpy as np

from xpcnn.backend.namespaces import backend_name, check_backend_name
from xpcnn.errors import DeviceUnavailableError

if TYPE_CHECKING:
    from xpcnn.backend.devices import Placement

#: NumPy draws dropout decisions as 16-bit integers: ``p`` is rounded to a multiple of 1/65536.
KEEP_LEVELS = 1 << 16

_NO_GPU_ADVICE = "check the driver with nvidia-smi, or train with device='cpu'"


def host_generator(*seed: int) -> np.random.Generator:
    """A NumPy generator seeded by a sequence of integers (for weights, data shuffling, host draws)."""
    return np.random.default_rng([int(s) for s in seed])


def mixed_seed(seed: int, counter: int) -> int:
    """The one integer that seeds draw ``counter`` of stream ``seed`` on CuPy and torch, in ``[0, 2**63)``."""
    return (int(seed) * 1_000_003 + int(counter)) % 2**63


def stored_channel_last(like: Any, shape: tuple[int, ...]) -> bool:
    """Whether NumPy array ``like`` of 4-D ``shape`` is an ``(N, C, H, W)`` view of channel-last memory.

    False when ``like`` is None or ``shape`` is not 4-D.
    """
    return (like is not None and len(shape) == 4 and like.transpose(0, 2, 3, 1).flags.c_contiguous
            and not like.flags.c_contiguous)


class Library:
    """What xpcnn needs from one array library; subclasses answer for numpy, cupy, torch, jax, array_api_strict.

    Attributes: ``name`` (the backend name, one of :data:`~xpcnn.backend.namespaces.BACKENDS`),
    ``distribution`` (its pip package), ``cuda_install`` (how to get a build that runs on CUDA, or
    None for a CPU-only library), ``runs_on_cpu`` and ``runs_on_cuda`` (which device kinds it
    accepts), ``gpu_dlpack`` (whether its CUDA arrays can be handed to another such library through
    DLPack without a host round trip).

    The defaults below fit a host library that takes no CUDA device and whose namespace accepts
    ``asarray(host, device=...)``; subclasses override what differs. Instances hold no state: use
    the shared ones from :func:`library`.
    """

    name = ""
    distribution = ""
    cuda_install: str | None = None
    runs_on_cpu = True
    runs_on_cuda = False
    gpu_dlpack = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- devices ---------------------------------------------------------------------------------
    def refusal(self, kind: str, spec: Any) -> str | None:
        """Why this library cannot run on device kind ``kind`` (``"cpu"`` or ``"cuda"``) asked for as ``spec``.

        Returns the message for a :class:`DeviceUnavailableError`, or None when the kind is fine.
        """
        if kind == "cuda" and not self.runs_on_cuda:
            return f"{self.name} has no CUDA devices; use device='cpu'"
        if kind == "cpu" and not self.runs_on_cpu:
            return f"{self.name} runs on CUDA GPUs only; use device='cuda'"
        return None

    def not_installed_for_cuda(self, spec: Any) -> str:
        """The message for CUDA asked for as ``spec`` while this library is not installed: names it and the fix."""
        how = self.cuda_install or f"pip install {self.distribution}"
        return f"CUDA was asked for ({spec!r}) but {self.name} is not installed; {how}, or train with device='cpu'"

    def no_cuda_device(self) -> str:
        """The message for CUDA asked for where this library sees no GPU; starts with "no CUDA device"."""
        return f"no CUDA device: {self.name} sees no usable NVIDIA GPU here; {_NO_GPU_ADVICE}"

    def cuda_count(self) -> int:
        """How many CUDA devices this library can use here (0 when none, or no CUDA support); never raises
        for a missing GPU. The library must be importable."""
        return 0

    def native_device(self, kind: str, index: int | str, spec: Any) -> Any:
        """This library's own device object for a parsed spec.

        ``kind`` is ``"cpu"``, ``"cuda"`` or ``"named"``; ``index`` the CUDA ordinal (or, for
        ``"named"``, the name); ``spec`` what the caller passed. A ``spec`` that is not a string is
        already a device object and is returned as it is. Raises :class:`DeviceUnavailableError` for
        a name the library does not know.
        """
        if not isinstance(spec, str):
            return spec
        return self._device(kind, index)

    def _device(self, kind: str, index: int | str) -> Any:
        return "cpu"

    def describe(self, placement: Placement) -> str:
        """The device part of ``str(placement)``: ``"cpu"`` or ``"cuda:N"``."""
        return "cpu" if placement.kind == "cpu" else f"cuda:{placement.index}"

    # -- arrays ----------------------------------------------------------------------------------
    def from_numpy(self, host: np.ndarray, placement: Placement) -> Any:
        """NumPy array ``host`` as an array of this library on ``placement.device``; same shape and dtype."""
        return placement.xp.asarray(host, device=placement.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Array ``x`` of this library as a NumPy array on the host (a copy, or a view where the library shares
        host memory); same shape and dtype."""
        return np.asarray(x)

    def to_device(self, x: Any, device: Any) -> Any:
        """Array ``x`` of this library on its device ``device`` (possibly ``x`` itself, when it is there already)."""
        return array_api_compat.to_device(x, device)

    def synchronize(self, placement: Placement) -> None:
        """Wait until ``placement``'s device has finished queued work (a no-op where work is synchronous)."""

    # -- random draws ----------------------------------------------------------------------------
    def uniform(self, placement: Placement, seed: int, counter: int, shape: tuple[int, ...], dtype: Any,
                like: Any = None) -> Any:
        """Draw number ``counter`` of stream ``seed``: uniform ``[0, 1)`` values of ``shape`` and ``dtype``
        on ``placement``. ``like`` is a hint about memory layout (used by NumPy only).

        Here: float32 draws of NumPy's generator seeded ``(seed, counter)``, moved to the device and cast.
        """
        draws = host_generator(seed, counter).random(shape, dtype=np.float32)
        return placement.xp.astype(self.from_numpy(draws, placement), dtype)

    def keep_mask(self, placement: Placement, seed: int, counter: int, shape: tuple[int, ...], p: float,
                  like: Any = None) -> Any:
        """Draw number ``counter`` of stream ``seed``: a boolean array of ``shape`` on ``placement``, True with
        probability ``1 - p``. Here: float32 :meth:`uniform` draws compared with ``p``."""
        return self.uniform(placement, seed, counter, shape, placement.xp.float32, like=like) >= p

    # -- memory ----------------------------------------------------------------------------------
    def reset_peak_memory(self, placement: Placement) -> None:
        """Start a fresh peak-memory window on ``placement`` (only where :meth:`peak_memory_bytes` reports one)."""

    def peak_memory_bytes(self, placement: Placement) -> int | None:
        """Device memory high-water mark on ``placement`` in bytes, or None where the library reports none."""
        return None


class NumpyLibrary(Library):
    """NumPy: the CPU, no device objects beyond ``"cpu"``, 16-bit dropout draws, channel-last aware draws."""

    name = "numpy"
    distribution = "numpy"

    def refusal(self, kind: str, spec: Any) -> str | None:
        if kind == "cuda":
            return (f"numpy runs on the CPU only, but device {spec!r} was asked for; "
                    "use backend='cupy' or backend='torch' for CUDA, or device='cpu'")
        return None

    def from_numpy(self, host: np.ndarray, placement: Placement) -> Any:
        return host

    def to_numpy(self, x: Any) -> np.ndarray:
        return x if isinstance(x, np.ndarray) else np.asarray(x)

    def to_device(self, x: Any, device: Any) -> Any:
        return x

    def uniform(self, placement: Placement, seed: int, counter: int, shape: tuple[int, ...], dtype: Any,
                like: Any = None) -> Any:
        """As :meth:`Library.uniform`; with a 4-D ``like`` stored channel-last, the draws are laid out the same way
        (the same values at the same ``(n, c, h, w)`` as drawing ``(n, h, w, c)`` and transposing)."""
        if stored_channel_last(like, shape):
            n, c, h, w = shape
            return self.uniform(placement, seed, counter, (n, h, w, c), dtype).transpose(0, 3, 1, 2)
        return host_generator(seed, counter).random(shape, dtype=np.float32).astype(dtype, copy=False)

    def keep_mask(self, placement: Placement, seed: int, counter: int, shape: tuple[int, ...], p: float,
                  like: Any = None) -> Any:
        """As :meth:`Library.keep_mask`, from 16-bit integers: True where a draw is ``>= round(p * 65536)``.

        The generator's raw 64-bit words cut in four (2.4x faster than ``Generator.integers``, 7x
        faster than drawing floats, which then need a comparison too). ``like`` as in :meth:`uniform`.
        """
        if stored_channel_last(like, shape):
            n, c, h, w = shape
            return self.keep_mask(placement, seed, counter, (n, h, w, c), p).transpose(0, 3, 1, 2)
        size = int(np.prod(shape))
        words = host_generator(seed, counter).bit_generator.random_raw(-(-size // 4))  # 4 draws per word
        draws = words.view(np.uint16)[:size].reshape(shape)
        return draws >= round(p * KEEP_LEVELS)


class CupyLibrary(Library):
    """CuPy: CUDA GPUs only; its memory pool gives the peak memory."""

    name = "cupy"
    distribution = "cupy-cuda12x"
    cuda_install = "install CuPy with pip install 'xpcnn[cuda12]' (or [cuda13])"
    runs_on_cpu = False
    runs_on_cuda = True
    gpu_dlpack = True

    def refusal(self, kind: str, spec: Any) -> str | None:
        if kind == "cpu":
            return "cupy runs on CUDA GPUs only; use device='cuda' with cupy, or backend='numpy' for the CPU"
        return None

    def cuda_count(self) -> int:
        import cupy
        if not cupy.cuda.is_available():  # never raises, unlike getDeviceCount
            return 0
        return int(cupy.cuda.runtime.getDeviceCount())

    def _device(self, kind: str, index: int | str) -> Any:
        import cupy
        return cupy.cuda.Device(index)

    def from_numpy(self, host: np.ndarray, placement: Placement) -> Any:
        import cupy
        with cupy.cuda.Device(placement.index):
            return cupy.asarray(host)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.get()

    def synchronize(self, placement: Placement) -> None:
        import cupy
        cupy.cuda.Device(placement.index).synchronize()

    def uniform(self, placement: Placement, seed: int, counter: int, shape: tuple[int, ...], dtype: Any,
                like: Any = None) -> Any:
        """As :meth:`Library.uniform`, from CuPy's generator seeded with :func:`mixed_seed`, on the GPU."""
        import cupy
        with cupy.cuda.Device(placement.index):
            rng = cupy.random.default_rng(mixed_seed(seed, counter))
            return rng.random(shape, dtype=cupy.float32).astype(dtype, copy=False)

    def reset_peak_memory(self, placement: Placement) -> None:
        """Free the pool's cached blocks, so that its total counts from here (CuPy keeps no high-water mark)."""
        import cupy
        cupy.get_default_memory_pool().free_all_blocks()

    def peak_memory_bytes(self, placement: Placement) -> int | None:
        """Bytes held by CuPy's default memory pool (cached blocks included)."""
        import cupy
        return int(cupy.get_default_memory_pool().total_bytes())


class TorchLibrary(Library):
    """PyTorch: the CPU and CUDA GPUs; CUDA work is asynchronous and has a peak-memory counter."""

    name = "torch"
    distribution = "torch"
    cuda_install = "pip install torch with CUDA support (see pytorch.org for the command that fits your driver)"
    runs_on_cuda = True
    gpu_dlpack = True

    def cuda_count(self) -> int:
        import torch
        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    def no_cuda_device(self) -> str:
        import torch
        if getattr(torch.version, "cuda", None) is None and getattr(torch.version, "hip", None) is None:
            return (f"no CUDA device: torch {torch.__version__} is a CPU-only build; {self.cuda_install}, "
                    "or train with device='cpu'")
        return super().no_cuda_device()

    def _device(self, kind: str, index: int | str) -> Any:
        import torch
        return torch.device("cpu") if kind == "cpu" else torch.device("cuda", index)

    def from_numpy(self, host: np.ndarray, placement: Placement) -> Any:
        import torch
        return torch.as_tensor(np.ascontiguousarray(host), device=placement.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def synchronize(self, placement: Placement) -> None:
        if placement.kind == "cuda":
            import torch
            torch.cuda.synchronize(placement.device)

    def uniform(self, placement: Placement, seed: int, counter: int, shape: tuple[int, ...], dtype: Any,
                like: Any = None) -> Any:
        """As :meth:`Library.uniform`, from a torch generator on the device seeded with :func:`mixed_seed`."""
        import torch
        gen = torch.Generator(device=placement.device).manual_seed(mixed_seed(seed, counter))
        return torch.rand(shape, generator=gen, device=placement.device, dtype=dtype)

    def reset_peak_memory(self, placement: Placement) -> None:
        if placement.kind == "cuda":
            import torch
            torch.cuda.reset_peak_memory_stats(placement.device)

    def peak_memory_bytes(self, placement: Placement) -> int | None:
        """``torch.cuda.max_memory_allocated`` on a CUDA placement; None on the CPU."""
        if placement.kind != "cuda":
            return None
        import torch
        return int(torch.cuda.max_memory_allocated(placement.device))


class JaxLibrary(Library):
    """JAX: the CPU and CUDA GPUs; keyed random draws; dispatch is asynchronous (see ``block_until_ready``)."""

    name = "jax"
    distribution = "jax"
    cuda_install = "install JAX for CUDA with pip install 'jax[cuda12]'"
    runs_on_cuda = True

    def cuda_count(self) -> int:
        import jax
        try:
            return len(jax.devices("gpu"))
        except RuntimeError:
            return 0

    def no_cuda_device(self) -> str:
        return (f"no CUDA device: jax sees no usable NVIDIA GPU here; {self.cuda_install} if it lacks CUDA support, "
                f"{_NO_GPU_ADVICE}")

    def _device(self, kind: str, index: int | str) -> Any:
        import jax
        return jax.devices("cpu")[0] if kind == "cpu" else jax.devices("gpu")[index]

    def from_numpy(self, host: np.ndarray, placement: Placement) -> Any:
        import jax
        return jax.device_put(host, placement.device)

    def uniform(self, placement: Placement, seed: int, counter: int, shape: tuple[int, ...], dtype: Any,
                like: Any = None) -> Any:
        """As :meth:`Library.uniform`, from the key ``fold_in(key(seed mod 2**32), counter)``."""
        import jax
        key = jax.random.fold_in(jax.random.key(int(seed) % 2**32), int(counter))
        return jax.device_put(jax.random.uniform(key, shape, dtype=dtype), placement.device)


class StrictLibrary(Library):
    """array_api_strict: the CPU only, under its own device names (``"CPU_DEVICE"``, ``"device1"``, ...)."""

    name = "array_api_strict"
    distribution = "array-api-strict"

    def refusal(self, kind: str, spec: Any) -> str | None:
        if kind == "cuda":
            return "array_api_strict has no CUDA devices; use device='cpu' or 'device1'"
        return None

    def _device(self, kind: str, index: int | str) -> Any:
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

    def describe(self, placement: Placement) -> str:
        """The device's own name, e.g. ``"CPU_DEVICE"`` or ``"device1"``."""
        text = str(placement.device)
        return text.split("'")[1] if "'" in text else text

    def to_numpy(self, x: Any) -> np.ndarray:
        import array_api_strict
        return np.from_dlpack(x.to_device(array_api_strict.Device("CPU_DEVICE")))


_LIBRARIES: dict[str, Library] = {lib.name: lib for lib in (
    NumpyLibrary(), CupyLibrary(), TorchLibrary(), JaxLibrary(), StrictLibrary())}


def library(name: str) -> Library:
    """The :class:`Library` of backend ``name`` (``"numpy"``, ``"cupy"``, ``"torch"``, ``"jax"`` or
    ``"array_api_strict"``); imports nothing. Raises :class:`BackendUnavailableError` for another name."""
    try:
        return _LIBRARIES[name]
    except KeyError:
        check_backend_name(name)  # raises, naming the known backends
        raise


def library_of(x: Any) -> Library:
    """The :class:`Library` that array ``x`` belongs to.

    Raises TypeError when ``x`` is not an array of any Array API library, and
    :class:`BackendUnavailableError` when it is one of a library xpcnn does not support.
    """
    if type(x) is np.ndarray:
        return _LIBRARIES["numpy"]
    return _LIBRARIES[backend_name(array_api_compat.array_namespace(x))]
