"""What each rank runs in tests/test_distributed.py: ``mpiexec -n 2 python tests/distributed_cases.py CASE OUT``.

Cases: ``step [BACKEND]`` (two data-parallel steps against one process with the global batch, float64;
rank 0 writes OUT/step.json), ``raise``, ``kill`` and ``hang`` (rank 1 raises, is killed, or stops at its third step) and
``mismatch`` (rank 1 is started with another batch size).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

import xpcnn
from xpcnn.backend import to_numpy
from xpcnn.data.datasets import Split
from xpcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

B = 8  # images per rank and step


def build(seed: int, backend: str = "numpy") -> xpcnn.Sequential:
    model = xpcnn.Sequential([Conv2D(1, 4, 3, seed=(seed, 0)), ReLU(), MaxPool2D(2), Flatten(),
                              Dense(4 * 5 * 5, 10, seed=(seed, 1))])
    return model.to("cpu", backend=backend, dtype="float64")


def data(count: int) -> Split:
    rng = np.random.default_rng(0)
    return Split(rng.integers(0, 256, (count, 12, 12), dtype=np.uint8), rng.integers(0, 10, count))


def trainer(model: xpcnn.Sequential, distributed: object) -> xpcnn.Trainer:
    return xpcnn.Trainer(model, xpcnn.optim.SGD(model, lr=0.1, momentum=0.9), backend=model.placement.backend,
                         seed=3, progress=False, distributed=distributed)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def step(out: Path, backend: str) -> None:
    comm = xpcnn.distributed.init()
    split = data(2 * B * comm.size)  # two steps: the second starts from averaged, broadcast-equal weights
    parallel = trainer(build(comm.rank, backend), True)  # rank 1's own initial weights: rank 0's are broadcast
    parallel.fit(split, epochs=1, batch_size=B, verbose=0)
    if comm.rank != 0:
        return
    single = trainer(build(0, backend), False)
    single.fit(split, epochs=1, batch_size=B * comm.size, verbose=0)
    report = {"steps": parallel.global_step, "single_steps": single.global_step}
    for (key, layer, name), (_, other, _) in zip(parallel.model.named_parameters(), single.model.named_parameters()):
        report[f"grad {key}"] = relative(to_numpy(layer.grads[name]), to_numpy(other.grads[name]))
        report[f"weight {key}"] = relative(to_numpy(layer.params[name]), to_numpy(other.params[name]))
    report["loss"] = [parallel.history[0]["loss"], single.history[0]["loss"]]
    (out / "step.json").write_text(json.dumps(report))


def failing(case: str) -> None:
    comm = xpcnn.distributed.init()
    model = build(seed=0)
    run = trainer(model, True)
    if comm.rank == 1:
        original, calls = run.optimizer.step, []

        def step_then_fail() -> None:
            calls.append(1)
            if len(calls) == 3:
                if case == "raise":
                    raise RuntimeError("rank 1 fails on purpose at its third step")
                os.kill(os.getpid(), signal.SIGKILL if case == "kill" else signal.SIGSTOP)
            original()
        run.optimizer.step = step_then_fail
    run.fit(data(400), epochs=5, batch_size=B, verbose=0)


def mismatch() -> None:
    comm = xpcnn.distributed.init()
    run = trainer(build(seed=0), True)
    from xpcnn.distributed.failures import run_or_abort
    run_or_abort(comm, "case", lambda: run.fit(data(64), epochs=1, batch_size=B + comm.rank, verbose=0))


if __name__ == "__main__":
    case, out = sys.argv[1], Path(sys.argv[2])
    if case == "step":
        step(out, sys.argv[3] if len(sys.argv) > 3 else "numpy")
    elif case == "mismatch":
        mismatch()
    else:
        failing(case)
