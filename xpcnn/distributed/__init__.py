"""Data-parallel training over processes, machines and GPUs, on MPI (mpi4py) and, for CuPy, NCCL.

    mpiexec -n 4 xpcnn train --distributed ...            # the command line
    trainer = xpcnn.Trainer(model, opt, distributed=True)  # in a script started by mpiexec

:func:`init` opens the MPI world (importing mpi4py: nothing here imports it before); the
:class:`Communicator` interface has one implementation per engine (:mod:`.mpi`, :mod:`.nccl`);
:mod:`.data_parallel` holds what the trainer calls, :mod:`.sharding` which images each rank takes, and
:mod:`.failures` how one rank's error stops them all.
"""

from xpcnn.distributed.communicator import Communicator, LocalCommunicator, init
from xpcnn.distributed.sharding import Shard

__all__ = ["Communicator", "LocalCommunicator", "Shard", "init"]
