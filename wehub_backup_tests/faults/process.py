"""A run in a process group of its own, as a schedule's run worker has, that a test can watch
phase by phase and kill outright; a watcher that acts at a moment of an in-process run; and
what the kernel says about processes (descendants, process groups, environments)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from wehub_backup.procfs import process_stat


def live_processes() -> dict[int, list[str]]:
    """Every process that is not a zombie, with its stat fields (state, ppid, pgrp, ...)."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := process_stat(int(entry.name))) and fields[0] != "Z":
            found[int(entry.name)] = fields
    return found


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid``, by parent links (programs in process groups of their own too)."""
    children: dict[int, list[int]] = {}
    for child, fields in live_processes().items():
        children.setdefault(int(fields[1]), []).append(child)
    found, pending = [], list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending += children.get(child, [])
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stopped_pid(lines: list[str], program: str) -> int:
    """The pid named by the "stopped PROGRAM (pid N) ..." line among an exception's notes or log lines."""
    [pid] = [int(m.group(1)) for line in lines if (m := re.search(rf"stopped {program} \(pid (\d+)\)", line))]
    return pid


def interrupt_this_process() -> None:
    """SIGINT to the test's own process: Python raises ``KeyboardInterrupt`` in the main thread."""
    os.kill(os.getpid(), signal.SIGINT)


class RunExitedEarly(AssertionError):
    """The run finished before the moment a test wanted to interrupt it."""


class BackgroundRun:
    """``python -m wehub_backup.cli ARGUMENTS...`` (a backup or a migration) with the test's environment."""

    def __init__(self, arguments: list[str], output_dir: Path) -> None:
        self.output = output_dir / f"cli-{arguments[0]}-{time.monotonic_ns()}.out"
        with open(self.output, "wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wehub_backup.cli", *arguments],
                env=os.environ.copy(), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def commands(self) -> list[str]:
        """Argument lists of the run's live processes (pg_dump and pg_restore run in process
        groups of their own, below the run)."""
        return [command_line(pid) for pid in descendants(self.process.pid)]

    def running(self, command: str) -> bool:
        """Whether a process of the run has ``command`` in its argument list: "pg_dump --format"
        is the dump itself, where a bare "pg_dump" also matches the version check in preflight."""
        return any(command in argv for argv in self.commands())

    def wait_until(self, moment: Callable[[], bool], description: str, timeout: float = 90.0) -> None:
        """Poll ``moment`` until it holds; fail if the run ends first or the moment never comes."""
        deadline = time.monotonic() + timeout
        while not moment():
            if self.process.poll() is not None:
                raise RunExitedEarly(f"the run exited ({self.process.returncode}) before {description}:\n{self.text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{description} did not happen within {timeout:.0f}s:\n{self.text()}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the whole process group: no handler, hook or finally block runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def text(self) -> str:
        return self.output.read_text(errors="replace")


class Watcher:
    """Does ``action`` once ``condition`` holds, from a thread, while the test runs a job in
    its own process (``execute_in_process`` blocks the test's thread).

    With ``act_on_timeout`` the action is done after ``timeout`` even if the condition never
    held (``fired`` stays false): an action that releases what the run waits for then still
    lets the run, and the test, end.
    """

    def __init__(self, condition: Callable[[], bool], action: Callable[[], object], timeout: float = 90.0,
                 *, act_on_timeout: bool = False) -> None:
        self.fired = False
        self._error: Exception | None = None  # what the condition or the action raised in the thread
        self._condition, self._action, self._timeout = condition, action, timeout
        self._act_on_timeout = act_on_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fault-watcher", daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        if self._error is not None and exc is None:
            raise AssertionError(f"the fault's condition or action raised {self._error!r}") from self._error

    def _watch(self) -> None:
        try:
            self._watch_until_done()
        except Exception as error:  # noqa: BLE001 - the test's thread raises it on leaving the block
            self._error = error

    def _watch_until_done(self) -> None:
        deadline = time.monotonic() + self._timeout
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self._condition():
                self._action()
                self.fired = True
                return
            time.sleep(0.02)
        if self._act_on_timeout and not self._stop.is_set():
            self._action()
