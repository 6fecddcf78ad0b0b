"""The NCCL engine: CuPy arrays reduced GPU to GPU through ``cupy.cuda.nccl``, its unique id sent over MPI.

Where NCCL is missing (a CuPy build without it) or cannot start, :func:`nccl_or_none` returns None and
CuPy arrays go through the MPI engine's host-staged path instead. A collective is queued on a stream and
waited for with the same deadline as MPI's (``distributed_timeout``); a timeout aborts the job through MPI.
"""

from __future__ import annotations

import sys
import time
from typing import Any, NoReturn

from xpcnn import settings
from xpcnn.distributed.communicator import OPS, Communicator


def nccl_or_none(mpi: Any, placement: Any) -> Communicator | None:
    """A :class:`NcclCommunicator` over the ranks of ``mpi`` on ``placement``'s GPU, or None (after one note on
    rank 0) where NCCL cannot run. Collective over ``mpi``: every rank calls it, and all get NCCL or none do."""
    import numpy as np
    try:
        from cupy.cuda import nccl
        available = np.array([1], dtype=np.int32)
    except Exception:  # noqa: BLE001 - any import failure means no NCCL here
        nccl, available = None, np.array([0], dtype=np.int32)
    everywhere = -int(mpi.allreduce(-available, op="max")[0])  # the minimum: 1 only if every rank has NCCL
    if nccl is None or everywhere == 0:
        if mpi.is_main:
            print("xpcnn: NCCL is not available on every rank; CuPy gradients go through host memory and MPI",
                  file=sys.stderr, flush=True)
        return None
    uid = bytes(nccl.get_unique_id()) if mpi.is_main else bytes(128)
    uid = mpi.broadcast(np.frombuffer(uid, dtype=np.uint8).copy()).tobytes()
    try:
        with placement.device:
            fast: Communicator | None = NcclCommunicator(nccl, mpi, tuple(uid), placement)
    except Exception as exc:  # noqa: BLE001 - e.g. two ranks on one GPU: NCCL refuses, MPI carries on
        fast, reason = None, f"{type(exc).__name__}: {exc}"
    started = -int(mpi.allreduce(-np.array([int(fast is not None)], dtype=np.int32), op="max")[0])
    if not started:
        if mpi.is_main:
            print(f"xpcnn: NCCL did not start on every rank ({reason if fast is None else 'on another rank'}); "
                  "CuPy gradients go through host memory and MPI", file=sys.stderr, flush=True)
        return None
    return fast


class NcclCommunicator(Communicator):
    """NCCL over the ranks of the MPI communicator ``mpi`` (which it falls back to for non-CuPy arrays and
    for :meth:`allgather_bytes` and :meth:`abort`)."""

    engine = "nccl"

    def __init__(self, nccl: Any, mpi: Any, uid: tuple[int, ...], placement: Any) -> None:
        self.nccl, self.mpi, self.placement = nccl, mpi, placement
        self.rank, self.size, self.local_rank = mpi.rank, mpi.size, mpi.local_rank
        self.comm = nccl.NcclCommunicator(mpi.size, uid, mpi.rank)
        self.xp = placement.xp
        import cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64, "int32": nccl.NCCL_INT32,
                       "int64": nccl.NCCL_INT64}

    def _is_cupy(self, x: Any) -> bool:
        return type(x).__module__.startswith("cupy") and str(x.dtype) in self._types

    def allreduce(self, x: Any, op: str = "sum") -> Any:
        if op not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
        if not self._is_cupy(x):
            return self.mpi.allreduce(x, op)
        x = self.xp.ascontiguousarray(x)
        self._ordered()
        nccl_op = self.nccl.NCCL_SUM if op == "sum" else self.nccl.NCCL_MAX
        self.comm.allReduce(x.data.ptr, x.data.ptr, x.size, self._types[str(x.dtype)], nccl_op, self.stream.ptr)
        self._wait(f"NCCL allreduce of {x.nbytes} bytes")
        return x

    def broadcast(self, x: Any, root: int = 0) -> Any:
        if not self._is_cupy(x):
            return self.mpi.broadcast(x, root)
        x = self.xp.ascontiguousarray(x)
        self._ordered()
        self.comm.bcast(x.data.ptr, x.size, self._types[str(x.dtype)], root, self.stream.ptr)
        self._wait(f"NCCL broadcast of {x.nbytes} bytes")
        return x

    def allgather_bytes(self, data: bytes) -> list[bytes]:
        return self.mpi.allgather_bytes(data)

    def abort(self, code: int = 1) -> NoReturn:
        self.mpi.abort(code)

    def _ordered(self) -> None:
        """The collective's stream waits for the work already queued on the current stream (the backward pass)."""
        import cupy
        self.stream.wait_event(cupy.cuda.get_current_stream().record())

    def _wait(self, what: str) -> None:
        timeout = settings.current().distributed_timeout
        started = time.monotonic()
        while not self.stream.done:
            if time.monotonic() - started > timeout:
                print(f"xpcnn: rank {self.rank} of {self.size} waited {timeout:g} s for the {what}: a rank died, "
                      "was stopped or is stuck; aborting every rank (raise XPCNN_DISTRIBUTED_TIMEOUT if a step "
                      "really takes that long)", file=sys.stderr, flush=True)
                self.comm.abort()
                self.mpi.abort(1)
            time.sleep(1e-4)
