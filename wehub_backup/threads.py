"""Work beside the caller's: two pieces at once (the first failure re-raised), or a small task
repeated in a thread for the length of a block."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def run_beside(main: Callable, beside: Callable, name: str,
               on_failure: Callable[[BaseException], None] | None = None) -> tuple:
    """Run ``main`` in a thread named ``name`` and ``beside`` here; return both results.

    ``beside`` runs to its end before ``main``'s failure is raised, so neither is left
    running when the caller moves on. When ``beside`` fails (or is interrupted), ``on_failure``
    gets its exception first, to end ``main`` (the dump stops its pg_dump): the thread is
    joined after that, never waited for to run its course.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = main()
        except BaseException as error:  # noqa: BLE001 - handed back to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    try:
        side = beside()
    except BaseException as error:
        if on_failure:
            on_failure(error)
        raise
    finally:
        thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"], side


@contextmanager
def repeated_beside(every_s: float, task: Callable[[], bool], name: str) -> Iterator[None]:
    """Run ``task`` in a thread named ``name`` every ``every_s`` while the block runs, until it returns
    False; the thread is joined when the block ends."""
    done = threading.Event()

    def repeat() -> None:
        while not done.wait(every_s) and task():
            pass

    thread = threading.Thread(target=repeat, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
