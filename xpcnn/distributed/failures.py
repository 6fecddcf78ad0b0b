"""When one rank fails, every rank stops: the error is printed once and the job aborts with a non-zero status.

Without this, a rank that raised would exit (or wait in ``MPI_Finalize``) while the others waited in their
next collective. Installed only in distributed mode (:func:`xpcnn.distributed.init`).
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from xpcnn.errors import XpcnnError

#: Ranks other than 0 that raise an error every rank raises (a configuration mismatch), or are interrupted, wait
#: this long before aborting, so that rank 0's message is the one printed and its checkpoint is saved.
_DEFER_TO_RANK0_S = 3.0


def agree_on_setup(comm: Any, setup: Callable[[], Any]) -> Any:
    """``setup()`` on every rank, then compare: if it failed on any rank (an xpcnn error, ValueError or
    OSError), every rank raises one :class:`XpcnnError` that rank 0 prints once: the message itself when every
    rank failed alike (a bad flag, a missing file on a shared disk), else each failing rank's message with its
    rank (a file missing on one machine). ``setup`` must make no collective call, so that every rank gets here."""
    try:
        result, message = setup(), ""
    except (XpcnnError, ValueError, OSError) as exc:
        result, message = None, str(exc).strip() or type(exc).__name__
    failed = [(rank, m.decode()) for rank, m in enumerate(comm.allgather_bytes(message.encode())) if m]
    if not failed:
        return result
    if len(failed) == comm.size and len({m for _, m in failed}) == 1:
        error = XpcnnError(failed[0][1])
    else:
        error = XpcnnError("; ".join(f"rank {rank} of {comm.size}: {m}" for rank, m in failed))
    error.every_rank = True  # type: ignore[attr-defined]
    raise error


def install_excepthook(comm: Any) -> None:
    """An uncaught exception prints its traceback once, prefixed with the rank, and aborts every rank."""
    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(f"xpcnn: rank {comm.rank} of {comm.size} failed; aborting every rank\n{text}")
        comm.abort(130 if issubclass(kind, KeyboardInterrupt) else 1)

    sys.excepthook = hook


def run_or_abort(comm: Any, command: str, body: Callable[[], int]) -> int:
    """``body()`` on this rank; if it raises, print one line (errors xpcnn raises on purpose, and ValueError and
    OSError, as the ``xpcnn`` command prints them) or the traceback, then abort every rank. An error that every
    rank raises alike (``every_rank = True`` on it) is printed by rank 0 only. A non-zero status that ``body``
    returns (130 after Ctrl-C, once rank 0 has saved its checkpoint) ends every rank with it too."""
    try:
        code = body()
    except (XpcnnError, ValueError, OSError) as exc:
        message = str(exc).strip() or type(exc).__name__
        if getattr(exc, "every_rank", False) and not comm.is_main:
            time.sleep(_DEFER_TO_RANK0_S)
        else:
            where = "" if getattr(exc, "every_rank", False) else f"rank {comm.rank} of {comm.size}: "
            print(f"{command}: error: {where}{message}", file=sys.stderr, flush=True)
        comm.abort(2)
    except KeyboardInterrupt:  # mpiexec passes Ctrl-C to every rank: rank 0 saves its checkpoint, then ends the job
        if not comm.is_main:
            time.sleep(_DEFER_TO_RANK0_S)
        print(f"{command}: rank {comm.rank} of {comm.size}: interrupted; aborting every rank", file=sys.stderr,
              flush=True)
        comm.abort(130)
    except BaseException as exc:  # noqa: BLE001 - any other failure: the traceback, once, then stop every rank
        if isinstance(exc, SystemExit) and not exc.code:
            raise
        sys.stderr.write(f"{command}: rank {comm.rank} of {comm.size} failed; aborting every rank\n"
                         + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        comm.abort(1)
    if code:
        comm.abort(code)  # the other ranks may be waiting in a collective this rank will never join
    return code
