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
from wehub_backup.pg.chunks import key_range_statements
from wehub_backup.pg.connection import ConnectionInfo, error_line, session_timeouts
from wehub_backup.pg.databases import connected_database_oid
from wehub_backup.pg.names import quote_pattern
from wehub_backup.pg.snapshot import gave_way_cause
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
# TID range scans (``ctid >= '(a,0)'``) read only the pages asked for since PostgreSQL 14; an
# older source reads each table whole.
TID_RANGE_SCAN_SINCE = 14
# The first user-defined OID: types below it are built in, the same on every server of a major version.
FIRST_USER_OID = 16384
# How psql reports its COPY giving up on the table's lock (``SourceReader.lock_wait_s``).
_LOCK_WAIT_FAILURE = re.compile(r"canceling statement due to lock timeout")

# The tables whose rows the copy carries, as the snapshot sees them: ordinary tables of the kept
# schemas (partitions, not their parents) that an extension does not own, with their non-generated
# columns and whether binary COPY suits them: every column of a built-in type with binary I/O that
# holds no OID of a catalog object (unlike the reg* types), and one of them bytea, whose text form
# (hex) is twice its size. Without bytea, text is what pg_dump sends and no larger: binary frames
# every value with four bytes of length, more than the digits of a small number take. Last, the
# catalog entries whose builds read only the table's rows: its indexes, and its primary key,
# unique and exclusion constraints. And whether another table inherits it (a digest of it reads those rows too).
_STREAMED_TABLES = """
SELECT c.oid, n.nspname, c.relname, pg_relation_size(c.oid), current_setting('block_size')::int,
       array_agg(a.attname::text ORDER BY a.attnum),
       bool_and(t.oid < %(first_user_oid)s AND t.typsend::oid <> 0 AND t.typreceive::oid <> 0
                AND t.typname !~ '^_?reg') AND bool_or(t.oid = 'bytea'::regtype),
       array_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attname),
       ARRAY(SELECT ARRAY['pg_class'::regclass::oid, i.indexrelid] FROM pg_index i WHERE i.indrelid = c.oid
             UNION ALL
             SELECT ARRAY['pg_constraint'::regclass::oid, k.oid] FROM pg_constraint k
             WHERE k.conrelid = c.oid AND k.contype IN ('p', 'u', 'x')),
       EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhparent = c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relkind = 'r' AND n.nspname = ANY(%(schemas)s) AND NOT (n.nspname || '.' || c.relname) = ANY(%(excluded)s)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
GROUP BY c.oid, n.nspname, c.relname
ORDER BY pg_relation_size(c.oid) DESC, n.nspname, c.relname"""
# Output both sides read the same way, as pg_dump sets it: names schema-qualified, no lossy floats.
_SESSION_SETTINGS = ("SET search_path = ''", "SET DateStyle = 'ISO'",
                     "SET IntervalStyle = 'postgres'", "SET extra_float_digits = 3", "SET row_security = off")


@dataclass(frozen=True)
class StreamedTable:
    oid: int
    schema: str
    name: str
    size_bytes: int
    block_size: int
    columns: tuple[str, ...]  # the non-generated ones: staging computes the generated ones itself
    binary_io: bool  # binary COPY reads it the same way and sends fewer bytes (see _STREAMED_TABLES)
    definition: tuple[str, ...] = ()  # the copied columns with their types: a copy of it takes the same rows
    # (catalog OID, object OID) of its indexes and of its constraints that build one: what of the
    # archive's post-data can be built as soon as its rows are in (foreign keys read other tables)
    own_indexes: tuple[tuple[int, int], ...] = ()
    # Another table inherits it: its digest (which reads without ONLY, as every digest does) counts
    # their rows too, so it is not final when its own rows are in.
    inherited: bool = False

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def streamed_tables(conn: psycopg.Connection, schemas: list[str],
                    excluded_tables: list[tuple[str, str]]) -> list[StreamedTable]:
    """The tables whose rows the stream engine copies, largest first, read in ``conn``'s snapshot."""
    rows = conn.execute(_STREAMED_TABLES, {"schemas": schemas, "first_user_oid": FIRST_USER_OID,
                                           "excluded": [f"{s}.{t}" for s, t in excluded_tables]}).fetchall()
    return [StreamedTable(oid, schema, name, size, block, tuple(columns), bool(binary), tuple(definition),
                          tuple((catalog, object_oid) for catalog, object_oid in indexes), inherited)
            for oid, schema, name, size, block, columns, binary, definition, indexes, inherited in rows]


def exclude_table_data_arguments(tables: list[StreamedTable]) -> list[str]:
    """pg_dump arguments leaving the streamed tables' rows out of the archive (exact-name patterns)."""
    return [f"--exclude-table-data={quote_pattern(t.schema)}.{quote_pattern(t.name)}" for t in tables]


@dataclass(frozen=True)
class CopyRange:
    """One staging transaction's worth of a table: pages [first_page, end_page), the rows a
    condition selects (an incremental copy's chunks), or the whole table; read from the source's
    snapshot, or ``from_copy``: from the current copy on the VPS."""

    table: StreamedTable
    first_page: int = 0
    end_page: int | None = None  # None: to the table's end (rows added since its size was read included)
    whole: bool = True
    selection: sql.Composable | None = field(default=None, compare=False)
    from_copy: bool = False
    label: str = ""  # what ``selection`` selects, in words
    replaces: bool = False  # staging already holds these rows' old versions (a file copy): delete them first

    def describe(self) -> str:
        if self.selection is not None:
            return f"{self.table.qualified} {self.label}"
        if self.whole:
            return self.table.qualified
        end = f"{self.end_page}" if self.end_page is not None else "end"
        return f"{self.table.qualified} pages {self.first_page}-{end}"

    def planner_settings(self) -> tuple[str, ...]:
        """What the sessions reading and replacing these rows set, so the key's index finds them."""
        return key_range_statements() if self.selection is not None else ()

    def where(self) -> sql.Composable:
        if self.selection is not None:
            return sql.SQL(" WHERE ") + self.selection
        if self.whole:
            return sql.SQL("")
        lower = sql.SQL(" WHERE ctid >= {}::tid").format(sql.Literal(f"({self.first_page},0)"))
        if self.end_page is None:
            return lower
        return lower + sql.SQL(" AND ctid < {}::tid").format(sql.Literal(f"({self.end_page},0)"))


def copy_ranges(tables: list[StreamedTable], range_bytes: int, source_major: int) -> list[CopyRange]:
    """The copy's work, largest tables first; a table over ``range_bytes`` in page ranges of that size."""
    ranges: list[CopyRange] = []
    for table in sorted(tables, key=lambda t: t.size_bytes, reverse=True):
        if table.size_bytes <= range_bytes or source_major < TID_RANGE_SCAN_SINCE:
            ranges.append(CopyRange(table))
            continue
        step = max(1, range_bytes // table.block_size)
        pages = table.size_bytes // table.block_size
        starts = list(range(0, pages, step))
        ranges += [CopyRange(table, start, start + step, whole=False) for start in starts[:-1]]
        ranges.append(CopyRange(table, starts[-1], None, whole=False))
    return ranges


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
