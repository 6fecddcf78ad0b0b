"""Ctrl-C acted on between training steps, never inside one.

A ``KeyboardInterrupt`` raised in the middle of a step can land inside a compiled kernel (numba then
reports a ``SystemError``), or after ``optimizer.step()`` but before the step is counted (a resumed run
then applies that batch twice). While :func:`at_step_boundaries` is active, SIGINT only sets a flag,
and the trainer raises ``KeyboardInterrupt`` at the next step boundary; a second Ctrl-C before then
interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def at_step_boundaries() -> Iterator[Callable[[], None]]:
    """Within the block, SIGINT is deferred; the yielded ``check()`` raises ``KeyboardInterrupt`` if one arrived.

    Outside the main thread, or where SIGINT is ignored (a background job) or handled by someone else's
    function, nothing changes and ``check()`` does nothing. The previous handler is restored on exit."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield lambda: None
        return
    received: list[int] = []

    def defer(signum: int, frame: object) -> None:
        if received:  # a second Ctrl-C: the user does not want to wait for the step to end
            raise KeyboardInterrupt
        received.append(signum)

    def check() -> None:
        if received:
            received.clear()
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, defer)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
