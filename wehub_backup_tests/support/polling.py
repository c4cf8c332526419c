"""Waiting in tests for something another process does (a server, a daemon, autovacuum)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float, *, interval: float = 0.1,
               context: Callable[[], str] = lambda: "") -> T:
    """Poll ``condition`` until it returns something true, and return that; after ``timeout``
    seconds fail, naming ``what`` and adding ``context()`` (a log tail, say)."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > deadline:
            extra = context()
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f":\n{extra}" if extra else ""))
        time.sleep(interval)
    return found
