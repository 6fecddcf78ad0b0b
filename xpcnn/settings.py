"""Every knob of xpcnn in one place: read once from the environment, overridden in a scope.

    import xpcnn
    xpcnn.settings.current().num_threads          # what runs now
    with xpcnn.settings(kernels=False):           # the portable reference ops only, for this block
        ...

The environment is read the first time a setting is needed, never again and never written:

- ``XPCNN_KERNELS=0`` (or the older ``XPCNN_NUMBA=0``): run the portable reference ops only, no
  accelerated kernel (:mod:`xpcnn.kernels`).
- ``XPCNN_NUM_THREADS=N``: worker threads of the NumPy kernels (``1``: none); default: the usable cores.
- ``XPCNN_CACHE_DIR``: where generated kernels are cached (default ``~/.cache/xpcnn/kernels``).
- ``XPCNN_DISTRIBUTED_TIMEOUT=S``: in data-parallel training, how many seconds a rank waits in one
  collective (an allreduce of gradients, a broadcast) for the other ranks before it aborts the job.

The other fields are tuning thresholds of the NumPy kernels, measured on NumPy
(``bench/results/optimization-log.md``); tests and benchmarks override them in a scope. An override
is seen by every thread (the worker threads included) until its ``with`` block ends.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MiB = 2**20


@dataclass(frozen=True)
class Settings:
    """All of xpcnn's settings (see the module docstring for the environment variables)."""

    #: Accelerated kernels on (where one applies) or off (the portable reference ops everywhere).
    kernels: bool = True
    #: Worker threads of the NumPy kernels; None: the usable cores. 1 turns the worker threads off.
    num_threads: int | None = None
    #: Folder of generated kernel sources and numba's cache of them; None: ``$XDG_CACHE_HOME/xpcnn/kernels``.
    cache_dir: Path | None = None
    #: NumPy element-wise passes over arrays of at least this many bytes are split over the worker threads.
    split_min_bytes: int = 16 * MiB
    #: Direct-convolution calls of at least this many FLOPs are split over the worker threads.
    direct_split_min_flops: int = 32_000_000
    #: Largest channel count (in and out) of the direct convolution kernels; None: 4 vectors' worth.
    direct_max_channels: int | None = None
    #: Upper bound on one chunk's patch matrix in the NumPy GEMM convolution, in bytes. 1 MiB measured
    #: 0.9-1.15x the time of 4 MiB per training step (resnet20, mnist-cnn, fastnet, lenet5; 512 KiB slower), once
    #: the caller's thread took chunks too (bench/results/2026-11-30-vm-resnet20.md).
    column_buffer_bytes: int = 1 * MiB
    #: Whole-batch patch matrices up to this size are kept for the backward pass instead of rebuilt.
    keep_columns_bytes: int = 16 * MiB
    #: Matrix products (a dense layer's, a convolution's GEMM chunks) of at least this many FLOPs are split
    #: over the worker threads (below it one thread measured faster: bench/results/2026-11-29-vm-session7.md).
    split_min_matmul_flops: int = 50_000_000
    #: Data-parallel training: seconds a rank waits in one collective for the others before aborting the job
    #: (the first step's includes every rank's kernel compilation, so keep it well above a minute).
    distributed_timeout: float = 600.0

    def __post_init__(self) -> None:
        """Raise TypeError/ValueError, naming the field, for a value of the wrong kind or out of range."""
        if not isinstance(self.kernels, bool):
            raise TypeError(f"kernels must be True or False, got {self.kernels!r}")
        if self.num_threads is not None and (type(self.num_threads) is not int or self.num_threads < 1):
            raise ValueError(f"num_threads must be a whole number of at least 1 (1 turns the worker threads off), "
                             f"or None for the usable cores; got {self.num_threads!r}")
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a folder path or None, got {self.cache_dir!r}")
        timeout = self.distributed_timeout
        if type(timeout) not in (int, float) or not timeout > 0 or timeout != timeout:
            raise ValueError(f"distributed_timeout must be a positive number of seconds, got {timeout!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "int" and (type(value) is not int or value < 0):
                raise ValueError(f"{field.name} must be a whole number >= 0, got {value!r}")
            if field.type == "int | None" and field.name != "num_threads" and value is not None and (
                    type(value) is not int or value < 1):
                raise ValueError(f"{field.name} must be a whole number >= 1 or None, got {value!r}")


#: Values of XPCNN_KERNELS (and XPCNN_NUMBA) and what they mean.
_SWITCH = {"1": True, "on": True, "true": True, "yes": True, "0": False, "off": False, "false": False, "no": False}


def from_environ(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``XPCNN_*`` variables of ``environ`` (default ``os.environ``); raises ValueError
    naming the variable for a value it cannot read."""
    env = os.environ if environ is None else environ
    changes: dict[str, object] = {}
    for name in ("XPCNN_KERNELS", "XPCNN_NUMBA"):
        if (switch := env.get(name)) is not None:
            if switch.strip().lower() not in _SWITCH:
                raise ValueError(f"{name} must be 0 (kernels off: the reference ops run) or 1, got {switch!r}")
            changes["kernels"] = _SWITCH[switch.strip().lower()]
            break
    if threads := env.get("XPCNN_NUM_THREADS", "").strip():
        try:
            count = int(threads)
        except ValueError:
            raise ValueError(f"XPCNN_NUM_THREADS must be a whole number of threads, got {threads!r}: "
                             "set it to e.g. 2, or unset it to use the usable cores") from None
        if count < 1:
            raise ValueError(f"XPCNN_NUM_THREADS must be at least 1, got {count}: set 1 to turn the worker "
                             "threads off, or unset it to use the usable cores")
        changes["num_threads"] = count
    if timeout := env.get("XPCNN_DISTRIBUTED_TIMEOUT", "").strip():
        try:
            changes["distributed_timeout"] = float(timeout)
        except ValueError:
            raise ValueError(f"XPCNN_DISTRIBUTED_TIMEOUT must be a number of seconds, got {timeout!r}: set it to "
                             "e.g. 600, or unset it for the default") from None
    if folder := env.get("XPCNN_CACHE_DIR"):
        changes["cache_dir"] = Path(folder)
    return Settings(**changes)


_lock = threading.Lock()
_current: Settings | None = None


def current() -> Settings:
    """The settings in force: the environment's (read on first use), or the innermost override."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = from_environ()
    return _current


class override:  # noqa: N801 - used as a function, like contextlib's
    """Within a ``with`` block, the current settings with ``changes``; restored on exit (errors included).

    Raises TypeError for a name that is no setting, and TypeError or ValueError for a bad value, when
    called (before the block). Settings change only inside the block: a call without ``with`` warns.
    """

    def __init__(self, **changes: object) -> None:
        known = {f.name for f in dataclasses.fields(Settings)}
        if unknown := sorted(set(changes) - known):
            raise TypeError(f"unknown setting(s) {', '.join(unknown)}; the settings are {', '.join(sorted(known))}")
        dataclasses.replace(current(), **changes)  # type: ignore[arg-type]  # checks the values now
        self.changes, self._before, self._entered = changes, None, False

    def __enter__(self) -> Settings:
        global _current
        self._entered = True
        self._before = current()
        _current = dataclasses.replace(self._before, **self.changes)  # type: ignore[arg-type]
        return _current

    def __exit__(self, *_: object) -> None:
        global _current
        _current = self._before

    def __del__(self) -> None:
        if not getattr(self, "_entered", True):
            warnings.warn("xpcnn.settings(...) changes settings only inside a `with` block; this call changed "
                          "nothing: write `with xpcnn.settings(...):`", RuntimeWarning, stacklevel=2)


class _Settings:
    """``xpcnn.settings``: call it for a scoped override, read ``current()`` for what is in force."""

    Settings = Settings
    current = staticmethod(current)
    from_environ = staticmethod(from_environ)

    def __call__(self, **changes: object):  # noqa: ANN204 - a context manager
        return override(**changes)

    def __repr__(self) -> str:
        return f"xpcnn.settings: {current()}"


#: The object exported as ``xpcnn.settings``.
settings = _Settings()
