"""Ctrl-C (and SIGTERM) acted on between training steps, never inside one.

A ``KeyboardInterrupt`` raised in the middle of a step can land inside a compiled kernel (numba then
reports a ``SystemError``), or after ``optimizer.step()`` but before the step is counted (a resumed run
then applies that batch twice). While :func:`at_step_boundaries` is active, SIGINT and SIGTERM only set
a flag, and the trainer raises ``KeyboardInterrupt`` at the next step boundary, where its callbacks save
a checkpoint; a second signal before then interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: The handlers a signal must have for xpcnn to defer it: Python's Ctrl-C handler, the default SIGTERM.
_DEFERRED = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


@contextmanager
def at_step_boundaries() -> Iterator[Callable[[], None]]:
    """Within the block, SIGINT and SIGTERM are deferred; the yielded ``check()`` raises ``KeyboardInterrupt``
    if one arrived.

    Outside the main thread nothing changes and ``check()`` does nothing; a signal that is ignored (a
    background job's SIGINT) or handled by someone else's function keeps its handler. The previous
    handlers are restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    received: list[int] = []

    def defer(signum: int, frame: object) -> None:
        if received:  # a second signal: the user does not want to wait for the step to end
            raise KeyboardInterrupt
        received.append(signum)

    def check() -> None:
        if received:
            received.clear()
            raise KeyboardInterrupt

    replaced = {sig: signal.signal(sig, defer) for sig, usual in _DEFERRED.items() if signal.getsignal(sig) is usual}
    try:
        yield check
    finally:
        for sig, previous in replaced.items():
            signal.signal(sig, previous)
