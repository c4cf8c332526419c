"""What a client program's stderr says: its error lines, the one that tells why it failed, and
the progress worth logging.

pg_dump, pg_restore and psql each word errors their own way, print the server's words apart
from their own, and a parallel program interleaves its workers' lines; a step shows one line.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import deque
from collections.abc import Callable

from wehub_backup.run.log import Log

_SERVER_DETAIL = re.compile(r"detail: Error message from server: (.+)$")
_ECHOED_QUERY = re.compile(r"error: (Query|Command) was: ")
_ERROR_LINE = re.compile(r"^[\w.]+: error: |^psql:.*\b(ERROR|FATAL):|^(ERROR|FATAL):|errors ignored on restore")
_KEPT_ERROR_LINES = 20
_SERVER_WORDS = re.compile(r"\b(ERROR|FATAL|PANIC): ")


def read_stderr_lines(child: subprocess.Popen, tail: deque[str], errors: list[str],
                      on_line: Callable[[str], None] | None) -> None:
    """Read ``child``'s stderr to its end, in a thread of its own while the child runs (a child
    that filled the pipe would stop): the last lines, and the first error lines apart (a parallel
    pg_restore goes on printing progress after a worker's error, which would push the error out of the tail)."""
    assert child.stderr is not None
    for raw in child.stderr:
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            continue
        tail.append(line)
        if len(errors) < _KEPT_ERROR_LINES and (is_error_line(line) or _SERVER_DETAIL.search(line)):
            errors.append(line)
        if on_line:
            on_line(line)
    child.stderr.close()


def is_error_line(line: str) -> bool:
    """pg_restore without --exit-on-error, and psql without ON_ERROR_STOP, exit 0 after errors."""
    return bool(_ERROR_LINE.search(line))


def failure_reason(error_lines: list[str], stderr_tail: list[str], returncode: int) -> str:
    """The most telling line: the first error in the server's words, else the first error, else
    the last line, else the exit status.

    A parallel pg_restore's leader may report "a worker process died unexpectedly" before the
    worker's own line with the server's ERROR reaches stderr: the server's words win. When they
    come only as a detail line (a connection lost during ``COPY`` reads only "PQgetCopyData()
    failed"), they are added: they are the cause. Workers write at once, so lines may interleave.
    """
    errors = [line for line in error_lines if is_error_line(line)]
    telling = [line for line in errors if not _ECHOED_QUERY.search(line)] or errors
    telling = [line for line in telling if _SERVER_WORDS.search(line)] or telling
    server = next((m.group(1).strip() for m in map(_SERVER_DETAIL.search, error_lines) if m), None)
    if telling:
        reason = telling[0].split("error: ", 1)[-1].strip()
        return f"{reason.rstrip('.')} ({server})" if server and server not in reason else reason
    if stderr_tail:
        return stderr_tail[-1]
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


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
