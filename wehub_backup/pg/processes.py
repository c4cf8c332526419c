"""Running a client program as a child process: its progress, its cost, its own error words."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from wehub_backup.errors import ToolError
from wehub_backup.pg.clients import settings_unknown_to

_SERVER_DETAIL = re.compile(r"detail: Error message from server: (.+)$")
_ECHOED_QUERY = re.compile(r"error: (Query|Command) was: ")
_ERROR_LINE = re.compile(r"^[\w.]+: error: |^psql:.*\b(ERROR|FATAL):|^(ERROR|FATAL):|errors ignored on restore")
_KEPT_ERROR_LINES = 20
_SERVER_WORDS = re.compile(r"\b(ERROR|FATAL|PANIC): ")


@dataclass
class ToolRun:
    """What a finished child process cost: for the run's metadata and the benchmark."""

    argv: list[str]
    returncode: int
    seconds: float
    peak_rss_bytes: int
    cpu_seconds: float
    stderr_tail: list[str] = field(default_factory=list)
    error_lines: list[str] = field(default_factory=list)

    def raise_if_failed(self) -> None:
        """``ToolError`` with one telling line, for a non-zero exit or an error the tool let pass."""
        if self.returncode != 0 or any(_is_error_line(line) for line in self.error_lines):
            raise ToolError(f"{Path(self.argv[0]).name} failed: {_reason(self)}")


def run_tool(
    argv: list[str],
    env: dict[str, str],
    *,
    on_line: Callable[[str], None] | None = None,
    low_priority: bool = False,
    stdout_path: Path | None = None,
) -> ToolRun:
    """Run a client program to completion; raise ``ToolError`` with its own words if it fails.

    stderr is read line by line (progress for the log; the first error lines and the tail for
    the error), and the child's CPU time comes from ``wait4``, its peak RSS from sampling.
    """
    stdout = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    try:
        child = _Child(argv, env, on_line, low_priority, stdout=stdout)
    finally:
        if stdout_path:
            stdout.close()
    return child.finish()


def run_pipeline(
    producer_argv: list[str],
    consumer_argv: list[str],
    env: dict[str, str],
    *,
    server_major: int,
    on_line: Callable[[str], None] | None = None,
    low_priority: bool = False,
) -> tuple[ToolRun, ToolRun]:
    """``producer | consumer`` (pg_restore's script into psql), dropping from the script's
    preamble the settings a server of ``server_major`` rejects.

    pg_restore 17 starts every script with ``SET transaction_timeout = 0``, which a
    PostgreSQL 16 or older rejects; the preamble is the only place it can appear, and
    the data that follows streams through untouched.
    """
    drop = tuple(b"SET " + setting + b" " for setting in settings_unknown_to(server_major))
    producer = _Child(producer_argv, env, on_line, low_priority, stdout=subprocess.PIPE)
    consumer = _Child(consumer_argv, env, on_line, low_priority, stdin=subprocess.PIPE)
    assert producer.process.stdout is not None and consumer.process.stdin is not None
    try:
        _copy_without_preamble_lines(producer.process.stdout, consumer.process.stdin, drop)
    except BrokenPipeError:
        producer.process.kill()
    finally:
        try:
            consumer.process.stdin.close()
        except BrokenPipeError:
            pass
    consumer_run = consumer.finish(raise_on_error=False)
    producer_run = producer.finish(raise_on_error=False)
    for run in (consumer_run, producer_run):
        run.raise_if_failed()
    return producer_run, consumer_run


def _copy_without_preamble_lines(source: IO[bytes], sink: IO[bytes], drop: tuple[bytes, ...]) -> None:
    for line in iter(source.readline, b""):
        if line.startswith(drop):
            continue
        sink.write(line)
        if line.startswith((b"CREATE", b"COPY", b"ALTER", b"COMMENT", b"GRANT", b"REVOKE", b"SELECT pg_catalog.setval")):
            break
    shutil.copyfileobj(source, sink, 1024 * 1024)


class _Child:
    """One child process with its stderr read line by line as it runs."""

    def __init__(self, argv: list[str], env: dict[str, str], on_line: Callable[[str], None] | None,
                 low_priority: bool, **streams: object) -> None:
        self.argv = list(argv)
        command = _low_priority_prefix() + self.argv if low_priority else self.argv
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, env=env, stdin=streams.pop("stdin", subprocess.DEVNULL),
                                        stderr=subprocess.PIPE, **streams)  # type: ignore[call-overload]
        self.tail: deque[str] = deque(maxlen=40)
        self.errors: list[str] = []
        self.reader = threading.Thread(target=_read_lines, args=(self.process, self.tail, self.errors, on_line),
                                       daemon=True)
        self.reader.start()
        self.peak_rss = _PeakRss(self.process.pid)

    def finish(self, raise_on_error: bool = True) -> ToolRun:
        _, status, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self.reader.join()
        self.peak_rss.stop()
        run = ToolRun(
            argv=self.argv,
            returncode=self.process.returncode,
            seconds=time.monotonic() - self.started,
            peak_rss_bytes=self.peak_rss.bytes,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            stderr_tail=list(self.tail),
            error_lines=list(self.errors),
        )
        if raise_on_error:
            run.raise_if_failed()
        return run


class _PeakRss:
    """The child's own peak RSS (``VmHWM``), sampled while it runs.

    ``wait4``'s ``ru_maxrss`` would report the forking Python process's size instead: the
    child inherits it before ``exec``, and the maximum never goes down.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._status = Path(f"/proc/{pid}/status")
        self._interval = interval
        self._done = threading.Event()
        self.bytes = 0
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.is_set():
            try:
                for line in self._status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.bytes = max(self.bytes, int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                return
            self._done.wait(self._interval)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _read_lines(child: subprocess.Popen, tail: deque[str], errors: list[str],
                on_line: Callable[[str], None] | None) -> None:
    """The last lines, and the first error lines apart: a parallel pg_restore goes on printing
    progress after a worker's error, which would push the error out of the tail."""
    assert child.stderr is not None
    for raw in child.stderr:
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            continue
        tail.append(line)
        if len(errors) < _KEPT_ERROR_LINES and (_is_error_line(line) or _SERVER_DETAIL.search(line)):
            errors.append(line)
        if on_line:
            on_line(line)
    child.stderr.close()


def _is_error_line(line: str) -> bool:
    """pg_restore without --exit-on-error, and psql without ON_ERROR_STOP, exit 0 after errors."""
    return bool(_ERROR_LINE.search(line))


def _reason(run: ToolRun) -> str:
    """The most telling line: the first error in the server's words, else the first error, else
    the last line, else the exit status.

    A parallel pg_restore's leader may report "a worker process died unexpectedly" before the
    worker's own line with the server's ERROR reaches stderr: the server's words win. When they
    come only as a detail line (a connection lost during ``COPY`` reads only "PQgetCopyData()
    failed"), they are added: they are the cause. Workers write at once, so lines may interleave.
    """
    errors = [line for line in run.error_lines if _is_error_line(line)]
    telling = [line for line in errors if not _ECHOED_QUERY.search(line)] or errors
    telling = [line for line in telling if _SERVER_WORDS.search(line)] or telling
    server = next((m.group(1).strip() for m in map(_SERVER_DETAIL.search, run.error_lines) if m), None)
    if telling:
        reason = telling[0].split("error: ", 1)[-1].strip()
        return f"{reason.rstrip('.')} ({server})" if server and server not in reason else reason
    if run.stderr_tail:
        return run.stderr_tail[-1]
    if run.returncode < 0:
        return f"killed by signal {-run.returncode}"
    return f"exit status {run.returncode}"


def _low_priority_prefix() -> list[str]:
    """nice, and ionice's best-effort lowest class, so the application keeps the machine."""
    prefix = []
    if shutil.which("nice"):
        prefix += ["nice", "-n", "10"]
    if shutil.which("ionice"):
        prefix += ["ionice", "-c", "2", "-n", "7"]
    return prefix


Log = Callable[[str], None]


class ProgressFilter:
    """Pass on errors at once, and table-level progress at most every few seconds.

    Every line logged is an event-log write in Dagster's storage: a per-table stream
    would cost more than it tells.
    """

    def __init__(self, log: Log, every_seconds: float = 5.0) -> None:
        self._log, self._every = log, every_seconds
        self._last, self._tables = 0.0, 0

    def __call__(self, line: str) -> None:
        if "error" in line:
            self._log(line)
        elif "dumping contents of table" in line or "processing data for table" in line:
            self._tables += 1
            if time.monotonic() - self._last >= self._every:
                self._last = time.monotonic()
                self._log(f"{line} ({self._tables} tables so far)")
