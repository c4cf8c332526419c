"""Stopping a run's step from outside: SIGINT, SIGTERM, or the run losing its lock.

Dagster turns SIGINT/SIGTERM inside an op into ``DagsterExecutionInterruptedError`` and then
skips the failure hooks: the staging database and the working files stay, no ``FAILURE`` line
is written, and a dump's egress is never recorded. Inside a step, this module turns them into
``RunInterrupted``, an ordinary exception: the step fails like any other (a dump records what
it received), the failure hook cleans up, and the cause names the signal.

The same path stops a step when the run's lock is lost (``stop_step`` from the lock's
keepalive thread, with ``LockLost``): the step fails at once instead of running on without it.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import ParamSpec, TypeVar

import dagster as dg

from wehub_backup.errors import RunInterrupted

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Delivered by ``stop_step`` to the main thread; its handler, once installed, stays: a stop
# that arrives between steps is ignored (the next step checks the run's locks first).
_STOP_SIGNAL = signal.SIGUSR1

P = ParamSpec("P")
R = TypeVar("R")


class _StepState:
    """What the handlers need to know: whether a step runs, and a stop requested for it."""

    running = False
    stop: BaseException | None = None


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise RunInterrupted(f"interrupted by {signal.Signals(signum).name}")


def _on_stop(signum: int, frame: FrameType | None) -> None:
    stop, _StepState.stop = _StepState.stop, None
    if _StepState.running and stop is not None:
        raise stop


@contextmanager
def interruptible_step() -> Iterator[None]:
    """Within the block (a step's body), SIGINT, SIGTERM and ``stop_step`` raise exceptions.

    Signal handlers can only be set in the main thread, where Dagster runs the steps of an
    in-process run; elsewhere the block runs with Dagster's own handling.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    for signum in _SIGNALS:
        signal.signal(signum, _on_signal)
    if signal.getsignal(_STOP_SIGNAL) is not _on_stop:
        signal.signal(_STOP_SIGNAL, _on_stop)
    _StepState.stop, _StepState.running = None, True
    try:
        yield
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        # A signal that reached Dagster's handler just before this block took over.
        raise RunInterrupted("interrupted by a signal (SIGINT or SIGTERM)") from None
    finally:
        _StepState.running = False
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def stop_step(error: BaseException) -> None:
    """From any thread: make the step running in the main thread raise ``error`` now.

    A real signal, not just a flag: it also wakes the main thread from a blocking wait
    (for pg_restore to exit, or for the thread running pg_dump).
    """
    if signal.getsignal(_STOP_SIGNAL) is not _on_stop or not _StepState.running:
        return
    _StepState.stop = error
    signal.pthread_kill(threading.main_thread().ident, _STOP_SIGNAL)  # type: ignore[arg-type]


def run_step(before: Callable[[dg.OpExecutionContext], None]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an op's function: its body runs in ``interruptible_step``, after ``before(context)``
    (which checks that the run still holds its locks)."""

    def decorate(body: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(body)
        def step(*args: P.args, **kwargs: P.kwargs) -> R:
            with interruptible_step():
                before(args[0] if args else kwargs["context"])  # type: ignore[arg-type]
                return body(*args, **kwargs)

        return step

    return decorate
