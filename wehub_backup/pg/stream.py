"""The stream engine's copy: rows from the run's held snapshot straight into staging by COPY.

For each range a worker starts psql on the source (through the dump's relay, so its bytes count
as egress), which imports the snapshot and writes ``COPY (SELECT ...) TO STDOUT`` to a pipe; the
worker feeds the pipe into ``COPY ... FROM STDIN`` on staging in large blocks, never parsing a
row: nothing is written to disk. A table
larger than the range size is copied in page ranges (a TID range scan), each its own staging
transaction, so a dropped connection costs one range again, not the whole table.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import psycopg
from psycopg import sql

from wehub_backup.errors import LockConflict, StagingReplaced
from wehub_backup.pg.connection import ConnectionInfo, error_line, session_timeouts
from wehub_backup.pg.databases import connected_database_oid
from wehub_backup.pg.snapshot import gave_way_cause
from wehub_backup.pg.streamed_tables import CopyRange, StreamedTable
from wehub_backup.pg.tool_output import failure_reason, read_stderr_lines

if TYPE_CHECKING:
    from wehub_backup.pg.dump import HeldSnapshot

T = TypeVar("T")

# Attempts at one range whose source or staging connection dropped; the held snapshot makes a
# second reading of the same rows exact.
COPY_ATTEMPTS = 3
# Before attempt n + 1, n times this long: a server that restarts, or a link that flickers, is
# given a moment, where attempts in a row would all meet the same fault.
RETRY_PAUSE_S = 1.0
# Errors of a session that say its connection went, beside libpq's own (no SQLSTATE) and class 08:
# the server shut down, crashed or is starting up, or had no slot free for a moment.
_CONNECTION_LOST_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# psql's exit status when its connection went bad; 1 (a -c statement's error, or psql's own) and
# 3 (a script's statement) say it failed on a connection that stayed up.
_PSQL_CONNECTION_BAD = 2
# How psql reports its COPY giving up on the table's lock (``SourceReader.lock_wait_s``).
_LOCK_WAIT_FAILURE = re.compile(r"canceling statement due to lock timeout")

# Output both sides read the same way, as pg_dump sets it: names schema-qualified, no lossy floats.
_SESSION_SETTINGS = ("SET search_path = ''", "SET DateStyle = 'ISO'",
                     "SET IntervalStyle = 'postgres'", "SET extra_float_digits = 3", "SET row_security = off")


@dataclass
class StreamResult:
    seconds: float
    workers: int
    ranges: int = 0
    rows: int = 0
    bytes: int = 0  # COPY data received from the source (without the protocol's framing)
    rows_from_copy: int = 0  # an incremental copy's unchanged rows, read from the current copy on the VPS
    bytes_from_copy: int = 0
    retries: int = 0
    binary_tables: list[str] = field(default_factory=list)
    text_tables: list[str] = field(default_factory=list)


@dataclass
class _Copy:
    """What every worker shares: where rows come from and go, and the flag that stops them all."""

    held: HeldSnapshot
    reader: SourceReader
    copy_reader: SourceReader | None  # the current copy on the VPS, for an incremental copy's unchanged rows
    staging: ConnectionInfo
    staging_db: str
    binary: Callable[[StreamedTable], bool]
    staging_settings: dict[str, str]
    log: Callable[[str], None]
    result: StreamResult
    staging_oid: int  # the staging database the run created: a worker writes into no other
    retries: LostConnectionRetries
    # Called in the worker that copied a table's last range, before it takes another: what can be
    # built over the table's rows now (its indexes), stopped when ``stopping`` is set.
    table_copied: Callable[[StreamedTable, threading.Event], None] | None = None
    ranges_left: dict[StreamedTable, int] = field(default_factory=dict)
    # Set to stop every worker at its next block: data flows while a copy runs, and a source that
    # stops sending is cut by the relay's stall watchdog, so each worker sees it soon.
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def copy(self, task: CopyRange) -> None:
        """One range, again from the start after a dropped connection (``LostConnectionRetries``)."""
        rows, received = self.retries.run(lambda: self._copy_once_or_give_way(task), self.stopping,
                                          f"copy of {task.describe()}",
                                          "its staging transaction was rolled back, copying it again")
        with self.lock:
            if task.from_copy:
                self.result.rows_from_copy += rows
                self.result.bytes_from_copy += received
            else:
                self.result.rows += rows
                self.result.bytes += received
            self.ranges_left[task.table] -= 1
            table_done = not self.ranges_left[task.table]
        if table_done and self.table_copied is not None:
            self.table_copied(task.table, self.stopping)

    def _copy_once_or_give_way(self, task: CopyRange) -> tuple[int, int]:
        """``_copy_once``; a reader that gave up on its table's lock fails the copy, as it would only wait again."""
        try:
            return self._copy_once(task)
        except psycopg.OperationalError as error:
            if _LOCK_WAIT_FAILURE.search(str(error)) and not self.stopping.is_set():
                raise self._lock_conflict(task) from error
            raise

    def _lock_conflict(self, task: CopyRange) -> LockConflict:
        """Why a range's reader gave up on its table's lock (``gave_way``); on the current copy on the
        VPS, no session of the run holds the table, so only the wait is told."""
        reader = self.copy_reader if task.from_copy else self.reader
        assert reader is not None
        where = "the current copy on the VPS" if task.from_copy else "the source"
        return gave_way(None if task.from_copy else self.held, task.table, "the copy's reading of it", where,
                        reader.lock_wait_s)

    @contextmanager
    def _staging_connection(self) -> Iterator[psycopg.Connection]:
        """A worker's staging connection, into the database this run created and no namesake made
        since (by a run that took the lock this one lost). When it is the connection that failed
        (the VPS gone, not the source's psql), the error says so: both read "server closed the
        connection" otherwise."""
        connection: psycopg.Connection | None = None
        try:
            with self.staging.connect(self.staging_db, autocommit=False) as connection:
                require_created_staging(connection, self.staging_db, self.staging_oid)
                yield connection
        except psycopg.OperationalError as error:
            if connection is None or connection.broken:
                raise psycopg.OperationalError(f"staging on the VPS: {error_line(error)}") from error
            raise

    def _copy_once(self, task: CopyRange) -> tuple[int, int]:
        """One range in one staging transaction, committed only when the source's psql ended cleanly."""
        table, binary = task.table, self.binary(task.table)
        fmt = sql.SQL("binary" if binary else "text")
        table_name = sql.Identifier(table.schema, table.name)
        columns = sql.SQL(", ").join(sql.Identifier(column) for column in table.columns)
        read = sql.SQL("COPY (SELECT {} FROM ONLY {}{}) TO STDOUT (FORMAT {})").format(
            columns, table_name, task.where(), fmt)
        write = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(table_name, columns, fmt)
        received = 0
        reader, snapshot = (self.copy_reader, None) if task.from_copy else (self.reader, self.held.snapshot)
        assert reader is not None
        with self._staging_connection() as dst:
            for statement in (*_SESSION_SETTINGS, *task.planner_settings()):
                dst.execute(statement)
            # The bytes go through as the source sends them: staging reads them in the same encoding.
            dst.execute("SELECT set_config('client_encoding', %s, false)", (self.reader.encoding,))
            for name, value in self.staging_settings.items():  # money read in the source's locale
                dst.execute("SELECT set_config(%s, %s, false)", (name, value))
            if task.replaces:  # in the same transaction: a failed attempt leaves the old rows
                dst.execute(sql.SQL("DELETE FROM ONLY {}{}").format(table_name, task.where()))
            with dst.cursor() as in_cursor:
                with in_cursor.copy(write) as into, reader.open(snapshot, read.as_string(dst), task.planner_settings()) as out:
                    for block in out.blocks():
                        if self.stopping.is_set():
                            raise psycopg.OperationalError("the copy was stopped")
                        received += len(block)
                        into.write(block)
                    # The source's COPY must have ended cleanly inside the staging one: rows cut short never commit.
                    out.check()
                rows = in_cursor.rowcount
            dst.commit()
        return rows, received


def require_created_staging(conn: psycopg.Connection, staging_db: str, staging_oid: int) -> None:
    """Raise unless ``conn`` is in the staging database the run created (``staging_oid``), not in a
    namesake made since by a run that took the lock this one lost."""
    if connected_database_oid(conn) != staging_oid:
        raise StagingReplaced(f"{staging_db} on the VPS is no longer the database this run created "
                              "(another run dropped or replaced it): this run neither writes into it nor reads it")


def gave_way(held: HeldSnapshot | None, table: StreamedTable, reader: str, where: str, waited_s: float) -> LockConflict:
    """Why ``reader`` gave up on ``table``'s lock. On the source, the snapshot session (``held``) holds
    every copied table, so the reader can only have waited behind a session that asked for ACCESS
    EXCLUSIVE after that, and that session waits for the run (a deadlock PostgreSQL cannot see): the
    copy gives way, and that session's change goes on."""
    cause = None if held is None else held.run(lambda session: gave_way_cause(session, [table], "copy", reader))
    return LockConflict(cause or f"lock wait on table {table.qualified} on {where} gave up after {waited_s:.0f} s "
                                 "(another session held or asked for it exclusively): run the backup again once "
                                 "that session's change is done")


class StatementFailed(psycopg.OperationalError):
    """A range's reading failed on the source with its connection up: an error of the statement."""


@dataclass
class LostConnectionRetries:
    """Work of the copy done again from its start after its connection dropped (``connection_lost``),
    up to ``COPY_ATTEMPTS`` times in all: the held snapshot makes a second reading return the same
    rows. Not once the copy is stopped, the source stalled or the snapshot's session gone, and only
    after a pause and ``before_retry`` (the run's check that it still holds its lock)."""

    held: HeldSnapshot
    before_retry: Callable[[], None]  # raises when the run may no longer write (its lock lost)
    log: Callable[[str], None]
    count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, work: Callable[[], T], stopping: threading.Event, what: str, again: str) -> T:
        """``work``'s result; each retry logged as ``what``'s, saying what is done ``again``."""
        for attempt in range(1, COPY_ATTEMPTS):
            try:
                return work()
            except psycopg.OperationalError as error:
                if stopping.is_set() or not connection_lost(error) or self.held.relay.stalled_for \
                        or not self.held.alive() or stopping.wait(RETRY_PAUSE_S * attempt):
                    raise
                self.before_retry()
                self.log(f"{what}: connection lost ({error_line(error)}); {again} "
                         f"(attempt {attempt + 1} of {COPY_ATTEMPTS})")
                with self._lock:
                    self.count += 1
        return work()  # the last attempt


def connection_lost(error: psycopg.OperationalError) -> bool:
    """Whether a range failed because a connection went, which a second attempt in the held snapshot
    may get past, and not because a statement failed on a live one (the VPS's disk full, a cancelled
    statement): every attempt would fail alike, and each would cost the range's egress again."""
    if isinstance(error, StatementFailed):
        return False
    return error.sqlstate is None or error.sqlstate.startswith("08") or error.sqlstate in _CONNECTION_LOST_STATES


@dataclass(frozen=True)
class SourceReader:
    """How a worker reads a range from the source: psql in the run's snapshot, through the relay.

    The rows travel from psql's output to staging's COPY in large blocks, parsed by neither side:
    read through psycopg, each row would be one Python call (the copy was bound by it).
    """

    psql: str
    environment: dict[str, str]  # libpq's variables for the relayed source, the password in a private file
    encoding: str  # the source database's: psql sends in it, staging reads in it
    # How long the COPY waits for its table's lock before it gives up. psql, unlike pg_dump, sets no
    # timeouts of its own: a login's statement_timeout (2 minutes on Supabase) would cut a long range.
    lock_wait_s: float
    server_version: int  # server_version_num of the server read: the timeouts it knows

    def open(self, snapshot: str | None, copy_statement: str, settings: tuple[str, ...] = ()) -> RangeReader:
        """A psql reading ``copy_statement``'s rows, in ``snapshot`` where one is given, after ``settings``.

        The transaction and every setting go in one query string before the COPY: two round trips
        a range, not one a statement (at a real link's 30 ms, a dozen statements cost a third of a
        second, for each of thousands of small tables)."""
        setup = ["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                 *([f"SET TRANSACTION SNAPSHOT '{snapshot}'"] if snapshot else []),
                 "SET client_min_messages = warning", *session_timeouts(self.server_version, self.lock_wait_s),
                 *_SESSION_SETTINGS, *settings]
        argv = [self.psql, "--no-psqlrc", "--quiet", "--no-password", "-v", "ON_ERROR_STOP=1",
                "-c", "; ".join(setup), "-c", copy_statement]
        return RangeReader(argv, {**self.environment, "PGCLIENTENCODING": self.encoding})


class RangeReader:
    """One psql process writing one range's COPY data to a pipe; killed if the copy stops early.

    Its stderr is read meanwhile, as every client program's is (``read_stderr_lines``): a psql
    that filled that pipe would stop before its COPY ended. Its error is the server's line, not the
    last one psql printed (for a statement's error, the caret under the statement's text).
    """

    BLOCK = 1 << 20
    EXIT_WAIT_S = 60

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._argv, self._env = argv, env
        self._stderr_tail: deque[str] = deque(maxlen=1)
        self._error_lines: list[str] = []

    def __enter__(self) -> RangeReader:
        self._process = subprocess.Popen(self._argv, env=self._env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        self._stderr = threading.Thread(target=read_stderr_lines, name="psql-stderr", daemon=True,
                                        args=(self._process, self._stderr_tail, self._error_lines, None))
        self._stderr.start()
        return self

    def blocks(self) -> Iterator[bytes]:
        assert self._process.stdout is not None
        descriptor = self._process.stdout.fileno()
        while block := os.read(descriptor, self.BLOCK):
            yield block

    def check(self) -> None:
        """Raise unless psql ended with success: a dropped connection or an error is a failed range."""
        try:
            code = self._process.wait(self.EXIT_WAIT_S)
        except subprocess.TimeoutExpired as error:
            raise psycopg.OperationalError(f"psql did not exit within {self.EXIT_WAIT_S} s of its COPY's end") from error
        if code != 0:
            self._stderr.join(self.EXIT_WAIT_S)  # its lines, written before it exited
            failed = StatementFailed if code > 0 and code != _PSQL_CONNECTION_BAD else psycopg.OperationalError
            raise failed(failure_reason(self._error_lines, list(self._stderr_tail), code))

    def __exit__(self, *exc_info: object) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._stderr.join(self.EXIT_WAIT_S)  # it closes the stderr pipe at its end
        if self._process.stdout is not None:
            self._process.stdout.close()


def raise_first_failure(futures: list[Future[None]]) -> None:
    """Wait for ``futures`` until all are done or one has failed, and raise the first failure at once:
    the ranges and index builds still running are then stopped by the caller, not awaited."""
    wait(futures, return_when=FIRST_EXCEPTION)
    for future in sorted(futures, key=lambda future: not future.done()):  # the done ones first
        future.result()


def stream_into_staging(held: HeldSnapshot, reader: SourceReader, staging: ConnectionInfo, staging_db: str,
                        tasks: list[CopyRange], workers: int, binary: Callable[[StreamedTable], bool], staging_settings: dict[str, str],
                        log: Callable[[str], None], copy_reader: SourceReader | None, *,
                        staging_oid: int, retries: LostConnectionRetries,
                        table_copied: Callable[[StreamedTable, threading.Event], None] | None = None) -> StreamResult:
    """Copy every range with ``workers`` parallel workers into ``staging_db`` while it is the database
    ``staging_oid`` (the one the run created); the first failure stops them all and is raised. A range
    whose connection dropped is copied again as ``retries`` allows (they count its retries too). Once a
    table's last range is in, the worker that copied it calls ``table_copied``
    before it takes another range."""
    started = time.monotonic()
    result = StreamResult(0.0, workers, len(tasks))
    for table in {task.table for task in tasks}:
        (result.binary_tables if binary(table) else result.text_tables).append(table.qualified)
    result.binary_tables.sort()
    result.text_tables.sort()
    job = _Copy(held, reader, copy_reader, staging, staging_db, binary, staging_settings, log, result, staging_oid,
                retries, table_copied, Counter(task.table for task in tasks))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="copy") as pool:
        futures = [pool.submit(job.copy, task) for task in tasks]
        try:
            raise_first_failure(futures)
        except BaseException:
            for future in futures:
                future.cancel()
            job.stopping.set()
            raise
    if not held.alive():  # the workers that had imported the snapshot could finish; the run must not
        raise psycopg.OperationalError("the snapshot session closed during the copy")
    result.seconds, result.retries = time.monotonic() - started, retries.count
    return result
