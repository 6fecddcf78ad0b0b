"""Data parallelism for the :class:`~xpcnn.training.Trainer`: what it calls, one line at each point of a step.

- :meth:`DataParallel.start` (start of ``fit``): checks that every rank was started with the same
  configuration, then broadcasts rank 0's weights, buffers and optimizer state.
- :attr:`DataParallel.shard`: this rank's part of each epoch's shared permutation (:mod:`.sharding`).
- :meth:`DataParallel.average_gradients` (after ``backward``): every parameter's gradient packed into one
  contiguous buffer per dtype, averaged with one allreduce each (tensor fusion), unpacked as views.
- :meth:`DataParallel.sum` (end of epoch, evaluation): metric sums over the ranks.
- :meth:`DataParallel.end_epoch`: running statistics (BatchNorm's buffers) averaged over the ranks. In
  training, BatchNorm normalizes with each rank's own batch statistics (no synchronized BatchNorm).
- :meth:`DataParallel.own_dropout_streams`: each rank draws its own dropout masks.

:class:`NotParallel` does nothing, so the trainer calls the same lines in one process.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

import numpy as np

from xpcnn.distributed.communicator import Communicator, resolve
from xpcnn.distributed.sharding import Shard
from xpcnn.errors import DistributedError


class NotParallel:
    """One process: every hook is a no-op."""

    rank, size, is_main = 0, 1, True
    shard: Shard | None = None
    eval_shard: Shard | None = None

    def device(self, device: Any) -> Any:
        return device

    def start(self, trainer: Any, count: int, batch_size: int, verbose: int = 0) -> None:
        """Nothing to check or broadcast."""

    def average_gradients(self) -> None:
        """The gradients are this process's."""

    def sum(self, values: Any) -> Any:
        return values

    def agree(self, flag: bool) -> bool:
        return flag

    def end_epoch(self) -> None:
        """No buffers to average."""

    def resume_step(self, state: dict[str, Any], batch_in_epoch: int) -> int:
        return resume_step(state, batch_in_epoch, 1, True)


def data_parallel(distributed: bool | Communicator, model: Any) -> NotParallel | DataParallel:
    """The trainer's hooks for ``Trainer(distributed=...)``: False -> :class:`NotParallel`."""
    comm = resolve(distributed)
    return NotParallel() if comm is None else DataParallel(comm, model)


class DataParallel:
    """The hooks of data-parallel training of ``model`` over the ranks of ``comm``."""

    def __init__(self, comm: Communicator, model: Any) -> None:
        self.comm, self.model = comm, model
        self.rank, self.size, self.is_main = comm.rank, comm.size, comm.is_main
        self.shard = Shard(comm.rank, comm.size, drop_remainder=True)
        self.eval_shard = Shard(comm.rank, comm.size, drop_remainder=False)

    def device(self, device: Any) -> Any:
        """``"cuda"`` (or ``"gpu"``) -> ``"cuda:<local rank>"``: one GPU per rank of a machine; others as given."""
        if isinstance(device, str) and device.strip().lower() in ("cuda", "gpu"):
            return f"cuda:{self.comm.local_rank}"
        return device

    @property
    def engine(self) -> Communicator:
        return self.comm.for_placement(self.model.placement)

    # -- start of fit -----------------------------------------------------------------------------
    def start(self, trainer: Any, count: int, batch_size: int, verbose: int = 0) -> None:
        """Stop every rank with one line naming the ranks whose configuration differs from rank 0's; then give
        every rank rank 0's weights, buffers and optimizer state. Prints the global batch on rank 0 (if verbose)."""
        check_same_config(self.comm, config_of(trainer, count, batch_size))
        self.broadcast_state(trainer.optimizer)
        self.own_dropout_streams()
        if self.is_main and verbose:
            print(f"data-parallel on {self.size} ranks ({self.engine.engine}): batch {batch_size} per rank, global "
                  f"batch {batch_size * self.size}; learning rate as given (not rescaled)", file=sys.stderr,
                  flush=True)

    def broadcast_state(self, optimizer: Any) -> None:
        """Rank 0's parameters, buffers and optimizer slots on every rank (one broadcast per dtype)."""
        stores: list[tuple[dict[str, Any], str]] = []
        for layer in self.model.layers:
            stores += [(layer.params, name) for name in layer.params]
            stores += [(layer.buffers, name) for name in layer.buffers]
        for key in sorted(optimizer.state if optimizer is not None else {}):
            slots = optimizer.state[key]
            stores += [(slots, name) for name in sorted(slots)]
        for group in _by_dtype(stores).values():
            packed = self.engine.broadcast(_pack(self.model.placement.xp, [store[name] for store, name in group]))
            _unpack(self.model.placement.xp, packed, group)

    def own_dropout_streams(self) -> None:
        """Each rank draws its own dropout masks: ranks other than 0 derive their layers' seeds from rank 0's
        and their rank (again after a restore, which sets rank 0's); rank 0 keeps its seeds, so its checkpoints
        hold the seeds a resumed run derives from. The masks' count (``draws``) is the same on every rank."""
        if self.rank == 0:
            return
        for layer in self.model.layers:
            if hasattr(layer, "draws") and getattr(layer, "_rank_seed", None) != layer.seed:
                mixed = hashlib.sha256(f"{layer.seed}/{self.rank}".encode()).digest()
                layer.seed = layer._rank_seed = int.from_bytes(mixed[:4], "little")

    # -- each step --------------------------------------------------------------------------------
    def average_gradients(self) -> None:
        """Every rank's gradients replaced by their mean over the ranks (one allreduce per dtype)."""
        xp = self.model.placement.xp
        entries = [(layer.grads, name) for _, layer, name in self.model.named_parameters() if name in layer.grads]
        for group in _by_dtype(entries).values():
            packed = self.engine.allreduce(_pack(xp, [store[name] for store, name in group]))
            _unpack(xp, packed / self.size, group)

    # -- end of epoch, evaluation ------------------------------------------------------------------
    def sum(self, values: Any) -> Any:
        """Host NumPy ``values`` (a number array) summed over the ranks."""
        return self.comm.allreduce(np.ascontiguousarray(values))

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (whether to stop training: its callbacks decide)."""
        return bool(self.comm.broadcast(np.array([int(flag)], dtype=np.int64))[0])

    def end_epoch(self) -> None:
        """Floating-point buffers (BatchNorm's running mean and variance) averaged over the ranks."""
        xp = self.model.placement.xp
        entries = [(layer.buffers, name) for layer in self.model.layers for name in layer.buffers
                   if "float" in str(layer.buffers[name].dtype)]
        for group in _by_dtype(entries).values():
            packed = self.engine.allreduce(_pack(xp, [store[name] for store, name in group]))
            _unpack(xp, packed / self.size, group)

    def resume_step(self, state: dict[str, Any], batch_in_epoch: int) -> int:
        return resume_step(state, batch_in_epoch, self.size, self.is_main)


def resume_step(state: dict[str, Any], batch_in_epoch: int, size: int, is_main: bool) -> int:
    """The step to resume the current epoch from, given a checkpoint's trainer ``state``: its
    ``batch_in_epoch`` with the same number of ranks; with another, the epoch's first (weights, optimizer state
    and epoch count carry over; the step index would point elsewhere in the permutation), said on rank 0."""
    saved = int(state.get("world_size", 1))
    if saved == size or batch_in_epoch == 0:
        return batch_in_epoch
    if is_main:
        print(f"xpcnn: the checkpoint was written by {saved} rank(s) and this run has {size}: weights, optimizer "
              f"state and finished epochs carry over, and epoch {int(state.get('epoch', 0)) + 1} restarts from its "
              f"first batch ({batch_in_epoch} step(s) of it are trained again)", file=sys.stderr, flush=True)
    return 0


def config_of(trainer: Any, count: int, batch_size: int) -> dict[str, Any]:
    """What must be equal on every rank: model, optimizer, batch size, data size, seed, dtype, progress."""
    optimizer = trainer.optimizer
    return {"model": trainer.model.config(), "optimizer": type(optimizer).__name__,
            "hyperparameters": optimizer.hyperparameters(), "optimizer_step": optimizer.step_count,
            "optimizer_slots": sorted(optimizer.state), "batch_size": batch_size, "train_images": count,
            "seed": trainer.seed, "dtype": trainer.model.dtype, "backend": trainer.placement.backend,
            "epoch": trainer.epoch, "batch_in_epoch": trainer.batch_in_epoch}


def check_same_config(comm: Communicator, config: dict[str, Any]) -> None:
    """Raise :class:`DistributedError` (on every rank, printed by rank 0) naming the ranks whose ``config``
    differs from rank 0's."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).digest()
    digests = comm.allgather_bytes(digest)
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        error = DistributedError(
            f"rank{'s' * (len(differ) > 1)} {', '.join(map(str, differ))} of {comm.size} started with another "
            f"configuration than rank 0 (compared: {', '.join(config)}); start every rank with the same command, "
            "data and checkpoint")
        error.every_rank = True  # type: ignore[attr-defined]  # every rank raises it: rank 0 prints it
        raise error


def _by_dtype(entries: list[tuple[dict[str, Any], str]]) -> dict[str, list[tuple[dict[str, Any], str]]]:
    groups: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for store, name in entries:
        groups.setdefault(str(store[name].dtype), []).append((store, name))
    return groups


def _pack(xp: Any, arrays: list[Any]) -> Any:
    """One contiguous 1-D array of ``arrays`` (one dtype), in order."""
    return xp.concat([xp.reshape(a, (-1,)) for a in arrays])


def _unpack(xp: Any, packed: Any, group: list[tuple[dict[str, Any], str]]) -> None:
    """Each ``store[name]`` of ``group`` replaced by its part of ``packed``, reshaped."""
    offset = 0
    for store, name in group:
        shape = tuple(store[name].shape)
        size = int(np.prod(shape, dtype=np.int64))
        store[name] = xp.reshape(packed[offset:offset + size], shape)
        offset += size
