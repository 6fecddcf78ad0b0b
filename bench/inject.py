"""Run the ``xpcnn`` command with a signal sent to itself at a chosen point of its work.

    python bench/inject.py --at backward:5 --signal SIGINT -- train --dataset mnist-sample ...

sends SIGINT to this process during the 5th call of ``Sequential.backward``, then lets the call finish, as a
user's Ctrl-C arriving at that moment would (SIGKILL ends the process there). The points (:data:`POINTS`)
cover a training step (forward, loss, backward, optimizer step), validation, the schedule, the checkpoint
write (after the temporary file is complete, before its rename) and the history line. Used by
tests/test_interrupts.py and bench/faults.py; the exit status is xpcnn's (or -9 after SIGKILL).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys

#: point -> (module, attribute path) of the function whose K-th call gets the signal.
POINTS = {
    "forward": ("xpcnn.model", "Sequential.forward"),
    "loss": ("xpcnn.losses", "SoftmaxCrossEntropy.forward"),
    "backward": ("xpcnn.model", "Sequential.backward"),
    "optimizer-step": ("xpcnn.optim.base", "Optimizer.step"),
    "validation": ("xpcnn.training.trainer", "Trainer._evaluate"),
    "schedule-step": ("xpcnn.optim.schedules", "Schedule.step"),
    "checkpoint-write": ("xpcnn.backend.host", "fsync_replace"),
    "history-write": ("xpcnn.training.callbacks", "HistoryLogger.on_epoch_end"),
}


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's xpcnn, not another one installed in the environment


def install(point: str, count: int, signum: int) -> None:
    """Patch the function of ``point`` so that its ``count``-th call sends ``signum`` to this process (once)."""
    module_name, path = POINTS[point]
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original = getattr(owner, name)
    calls = [0]

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == count:
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--at", required=True, metavar="POINT:K", help=f"one of {', '.join(POINTS)}, and K")
    parser.add_argument("--signal", default="SIGINT", choices=["SIGINT", "SIGTERM", "SIGKILL"])
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="-- then the xpcnn command's arguments")
    args = parser.parse_args()
    point, _, count = args.at.partition(":")
    if point not in POINTS or not count.isdigit() or int(count) < 1:
        parser.error(f"--at must be POINT:K with POINT one of {', '.join(POINTS)} and K >= 1, got {args.at!r}")
    install(point, int(count), getattr(signal, args.signal))
    from xpcnn.cli.main import main as xpcnn_main
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    return xpcnn_main(argv)


if __name__ == "__main__":
    sys.exit(main())
