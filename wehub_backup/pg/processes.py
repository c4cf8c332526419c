"""Running a client program as a child process: its cost, and how it is stopped (what its stderr
says is ``tool_output``'s).

A child never outlives the step that started it: it runs in a process group of its own
(so that stopping it reaches a parallel pg_dump's workers too), and leaving the block that
started it by an exception or an interrupt stops that whole group; a run process killed
outright takes it along through the kernel's parent-death signal (SIGTERM, which a parallel
pg_dump passes on to its workers). Its environment holds only what ``config.child_environment``
lets through, and the files it writes are private (umask 077).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from wehub_backup.errors import RunInterrupted, ToolError
from wehub_backup.files import PRIVATE_UMASK, open_private
from wehub_backup.pg.clients import settings_unknown_to
from wehub_backup.pg.tool_output import failure_reason, is_error_line, read_stderr_lines
from wehub_backup.procfs import live_group_members, peak_rss, process_tree

# A stopped child gets SIGINT (a client program then cancels its queries on the server), and
# SIGKILL if it has not exited after this long.
STOP_GRACE_SECONDS = 5.0
_KILL_WAIT_SECONDS = 10.0


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
        if self.returncode != 0 or any(is_error_line(line) for line in self.error_lines):
            reason = failure_reason(self.error_lines, self.stderr_tail, self.returncode)
            raise ToolError(f"{Path(self.argv[0]).name} failed: {reason}")


def run_tool(
    argv: list[str],
    env: dict[str, str],
    *,
    on_line: Callable[[str], None] | None = None,
    log: Callable[[str], None] | None = None,
    low_priority: bool = False,
    stdout_path: Path | None = None,
) -> ToolRun:
    """Run a client program to completion; raise ``ToolError`` with its own words if it fails.

    stderr is read line by line (progress for ``on_line``; the first error lines and the tail
    for the error). An exception or an interrupt while it runs stops it, and ``log`` says so.
    """
    with ToolProcess(argv, env, on_line=on_line, log=log, low_priority=low_priority, stdout_path=stdout_path) as child:
        return child.finish()


def run_pipeline(
    producer_argv: list[str],
    consumer_argv: list[str],
    env: dict[str, str],
    *,
    server_major: int,
    on_line: Callable[[str], None] | None = None,
    log: Callable[[str], None] | None = None,
    low_priority: bool = False,
) -> tuple[ToolRun, ToolRun]:
    """``producer | consumer`` (pg_restore's script into psql), dropping from the script's
    preamble the settings a server of ``server_major`` rejects.

    pg_restore 17 starts every script with ``SET transaction_timeout = 0``, which a
    PostgreSQL 16 or older rejects; the preamble is the only place it can appear, and
    the data that follows streams through untouched.
    """
    drop = tuple(b"SET " + setting + b" " for setting in settings_unknown_to(server_major))
    start = functools.partial(ToolProcess, env=env, on_line=on_line, log=log, low_priority=low_priority)
    with start(producer_argv, stdout=subprocess.PIPE) as producer, start(consumer_argv, stdin=subprocess.PIPE) as consumer:
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


class ToolProcess:
    """One client program in a process group of its own, its stderr read line by line as it runs.

    As a context manager it never outlives its block: leaving the block by an exception or
    an interrupt (``KeyboardInterrupt``, Dagster's ``DagsterExecutionInterruptedError``) while
    the program runs stops its whole group, and the exception and ``log`` say so. ``finish``
    may wait in another thread meanwhile (``dump_source`` fingerprints beside pg_dump): one
    thread at a time collects the exit status.
    """

    def __init__(self, argv: list[str], env: dict[str, str], *, on_line: Callable[[str], None] | None = None,
                 log: Callable[[str], None] | None = None, low_priority: bool = False,
                 stdin: int = subprocess.DEVNULL, stdout: int = subprocess.DEVNULL,
                 stdout_path: Path | None = None) -> None:
        self.argv = list(argv)
        self.name = Path(self.argv[0]).name
        self._log = log
        self._reaping = threading.Lock()
        self._status: int | None = None
        self._cpu_seconds = 0.0
        command = _parent_death_prefix() + (_low_priority_prefix() if low_priority else []) + self.argv
        output = open_private(stdout_path) if stdout_path else None
        self.started = time.monotonic()
        try:
            self.process = subprocess.Popen(command, env=env, stdin=stdin, stdout=output or stdout,
                                            stderr=subprocess.PIPE, start_new_session=True, umask=PRIVATE_UMASK)
        finally:
            if output:
                output.close()
        try:
            self.tail: deque[str] = deque(maxlen=40)
            self.errors: list[str] = []
            self.reader = threading.Thread(target=read_stderr_lines,
                                           args=(self.process, self.tail, self.errors, on_line), daemon=True)
            self.reader.start()
            self.peak_rss = _TreeRss(self.process.pid)
        except BaseException:  # an interrupt before the block that stops it has begun
            _signal_group(self.process.pid, signal.SIGKILL)
            self._reap(_KILL_WAIT_SECONDS)
            raise

    def __enter__(self) -> ToolProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_because(exc)

    def stop_because(self, exc: BaseException | None) -> None:
        """Stop the program if it still runs, and add to ``exc`` (what ended the step) that it did."""
        if self._status is not None:
            return
        message = self.stop(_ended_by(exc))
        if exc is not None:
            exc.add_note(message)

    def finish(self, raise_on_error: bool = True) -> ToolRun:
        """Wait for the program's exit; its cost, and (``raise_on_error``) ``ToolError`` if it failed."""
        self._reap(None)
        self._release()
        run = ToolRun(
            argv=self.argv,
            returncode=self.process.returncode,
            seconds=time.monotonic() - self.started,
            peak_rss_bytes=self.peak_rss.bytes,
            cpu_seconds=self._cpu_seconds,
            stderr_tail=list(self.tail),
            error_lines=list(self.errors),
        )
        if raise_on_error:
            run.raise_if_failed()
        return run

    def wait(self, timeout: float) -> bool:
        """Whether the program has exited, waiting for it at most ``timeout`` seconds."""
        return self._reap(timeout)

    def stop(self, reason: str) -> str:
        """SIGINT the program's process group, SIGKILL it after ``STOP_GRACE_SECONDS``; a line saying so.

        On SIGINT pg_dump, pg_restore, psql and vacuumdb cancel their queries on the server, so
        a stopped dump stops reading there too. The second SIGKILL reaches workers still in the
        group once the leader is gone.
        """
        pid = self.process.pid
        _signal_group(pid, signal.SIGINT)
        how = ""
        if not self._reap(STOP_GRACE_SECONDS):
            _signal_group(pid, signal.SIGKILL)
            how = f" with SIGKILL (still running {STOP_GRACE_SECONDS:.0f}s after SIGINT)"
            if not self._reap(_KILL_WAIT_SECONDS):
                how += f", not reaped {_KILL_WAIT_SECONDS:.0f}s later"
        _signal_group(pid, signal.SIGKILL)
        if left := _await_group_end(pid, _KILL_WAIT_SECONDS):
            how += f", {left} process(es) of its group still alive {_KILL_WAIT_SECONDS:.0f}s after SIGKILL"
        self._release(timeout=_KILL_WAIT_SECONDS)
        message = f"stopped {self.name} (pid {pid}) and its process group{how}: {reason}"
        if self._log:
            self._log(message)
        return message

    def _reap(self, timeout: float | None) -> bool:
        """Collect the exit status, waiting at most ``timeout`` seconds (None: until the program exits)."""
        if not self._reaping.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._status is None:
                pid, status, usage = os.wait4(self.process.pid, 0 if deadline is None else os.WNOHANG)
                if pid:
                    self._status, self._cpu_seconds = status, usage.ru_utime + usage.ru_stime
                    self.process.returncode = os.waitstatus_to_exitcode(status)
                elif deadline is not None and time.monotonic() >= deadline:
                    return False
                else:
                    time.sleep(0.02)
            return True
        finally:
            self._reaping.release()

    def _release(self, timeout: float | None = None) -> None:
        """After the exit: the last stderr lines read, memory sampling ended, pipes closed."""
        self.reader.join(timeout)
        self.peak_rss.stop()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass


def _ended_by(exc: BaseException | None) -> str:
    if exc is None:
        return "its block ended before it did"
    if isinstance(exc, Exception) and not isinstance(exc, RunInterrupted):
        return f"the step failed beside it ({type(exc).__name__})"
    return f"the step was interrupted ({type(exc).__name__})"


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _await_group_end(pgid: int, timeout: float) -> int:
    """Wait until no live process is left in the group; how many still were at ``timeout``.

    A SIGKILL is only delivered once the killed process next runs, so on a busy machine a
    parallel dump's worker may still be writing into the run's directory just after the kill.
    What the step does next (removing that directory, reporting the program stopped) waits for it.
    """
    deadline = time.monotonic() + timeout
    while (left := len(live_group_members(pgid))) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


class _TreeRss:
    """Peak memory of a program and every process it starts, sampled while it runs.

    The figure is the sum of each process's own peak RSS (``VmHWM``). A parallel pg_dump's
    leader stays small while each worker holds the rows it copies (one worker took 770 MiB
    for a 200 MB bytea value while the leader peaked at 13 MiB), so the leader alone says
    little. The sum is an upper bound of what the tree held at once: the workers' peaks need
    not coincide, and pages a forked worker still shares with its leader count in both.
    ``wait4``'s ``ru_maxrss`` would report the forking Python process's size instead: the
    child inherits it before ``exec``, and the maximum never goes down.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._root = pid
        self._interval = interval
        self._done = threading.Event()
        self._peaks: dict[int, int] = {}
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self._thread.start()

    @property
    def bytes(self) -> int:
        return sum(self._peaks.values())

    def _sample(self) -> None:
        while not self._done.is_set():
            for pid in process_tree(self._root):
                peak = peak_rss(pid)
                if peak > self._peaks.get(pid, 0):
                    self._peaks[pid] = peak
            self._done.wait(self._interval)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _parent_death_prefix() -> list[str]:
    """``setpriv --pdeathsig TERM``: the program gets SIGTERM when the thread that started it dies.

    Its own process group keeps it out of a SIGKILL aimed at the run's group, so without this
    a run killed outright (out of memory, ``kill -9``) would leave it running. On SIGTERM a
    parallel pg_dump or pg_restore passes the signal on to its workers and cancels their
    queries, which SIGKILL would not let it do. Each program is started by the thread that
    waits for it, or by the step's own (main) thread.
    """
    return ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []


def _low_priority_prefix() -> list[str]:
    """nice, and ionice's best-effort lowest class, so the application keeps the machine."""
    prefix = []
    if shutil.which("nice"):
        prefix += ["nice", "-n", "10"]
    if shutil.which("ionice"):
        prefix += ["ionice", "-c", "2", "-n", "7"]
    return prefix
