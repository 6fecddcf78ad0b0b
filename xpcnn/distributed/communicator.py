"""The communicator interface of data-parallel training, and :func:`init`, which opens the MPI world.

One implementation per engine: :class:`~xpcnn.distributed.mpi.MpiCommunicator` (mpi4py; arrays of any
backend, staged through host memory unless they are NumPy), :class:`~xpcnn.distributed.nccl.NcclCommunicator`
(CuPy arrays through NCCL, its unique id sent over MPI) and :class:`LocalCommunicator` (one process: every
collective returns its input). mpi4py is imported by :func:`init` only, never by importing xpcnn.
"""

from __future__ import annotations

from typing import Any, NoReturn

#: Reduction operations a communicator's :meth:`~Communicator.allreduce` takes.
OPS = ("sum", "max")


class Communicator:
    """``size`` processes (ranks) that run the same program; this one is ``rank`` (``local_rank`` on its machine).

    Arrays are 1-D and contiguous, of any backend; each collective returns an array on the input's placement
    (for NumPy input, possibly the input itself, overwritten). Every rank must call the same collectives in the
    same order. A collective that waits longer than ``xpcnn.settings.current().distributed_timeout`` aborts the
    job with a message that names the ranks that did not answer.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    engine: str = "local"

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints and writes files."""
        return self.rank == 0

    def allreduce(self, x: Any, op: str = "sum") -> Any:
        """The element-wise ``op`` ("sum" or "max") of ``x`` over all ranks, on every rank."""
        raise NotImplementedError

    def broadcast(self, x: Any, root: int = 0) -> Any:
        """Rank ``root``'s ``x`` (same shape and dtype on every rank) on every rank."""
        raise NotImplementedError

    def allgather_bytes(self, data: bytes) -> list[bytes]:
        """Every rank's ``data`` (any length), in rank order."""
        raise NotImplementedError

    def abort(self, code: int = 1) -> NoReturn:
        """End every rank of the job with exit status ``code`` (after printing what went wrong: this prints nothing)."""
        raise SystemExit(code)

    def for_placement(self, placement: Any) -> Communicator:
        """The communicator to reduce arrays of ``placement`` with (NCCL's for CuPy arrays where it runs)."""
        return self

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.size} ({self.engine})"


class LocalCommunicator(Communicator):
    """One process: every collective returns its input."""

    def allreduce(self, x: Any, op: str = "sum") -> Any:
        if op not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
        return x

    def broadcast(self, x: Any, root: int = 0) -> Any:
        return x

    def allgather_bytes(self, data: bytes) -> list[bytes]:
        return [bytes(data)]


_world: Communicator | None = None


def init() -> Communicator:
    """The world communicator of this MPI job (opened on first call, the same object afterwards).

    Started without ``mpiexec``, it is a world of one rank. Installs an excepthook that prints an uncaught
    exception once, naming the rank, and aborts every rank (no rank waits for one that died).
    Raises :class:`DistributedError` when mpi4py or an MPI library is missing, saying what to install.
    """
    global _world
    if _world is None:
        from xpcnn.distributed.failures import install_excepthook
        from xpcnn.distributed.mpi import MpiCommunicator
        _world = MpiCommunicator.world()
        install_excepthook(_world)
    return _world


def resolve(distributed: bool | Communicator) -> Communicator | None:
    """``Trainer(distributed=...)``: False -> None (one process), True -> :func:`init`, a communicator -> itself."""
    if isinstance(distributed, Communicator):
        return distributed
    if distributed is True:
        return init()
    if distributed is False or distributed is None:
        return None
    raise TypeError(f"distributed must be True, False or an xpcnn.distributed communicator, got {distributed!r}")
