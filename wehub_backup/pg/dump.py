"""pg_dump from a snapshot this project holds, fingerprinted in the same snapshot meanwhile.

Both jobs extract this way: the backup from Supabase (every byte counted as egress), the
migration from the VPS database.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg import sql

from wehub_backup.config import STALL_TIMEOUT_ENV
from wehub_backup.errors import DumpFailed, LockConflict, SnapshotLost, SourceStalled, ToolError
from wehub_backup.pg.catalog import DatabaseCatalog
from wehub_backup.pg.chunks import ChunkBounds
from wehub_backup.pg.clients import PgClient
from wehub_backup.pg.connection import ConnectionInfo, error_line
from wehub_backup.pg.fingerprint import DatabaseFingerprint, fingerprint_database, sequence_positions
from wehub_backup.pg.processes import ToolProcess, ToolRun
from wehub_backup.pg.relay import ByteCountingRelay, relayed_connection
from wehub_backup.pg.snapshot import DumpedTable, export_locked_snapshot, gave_way_cause, held_table_lock_wait_s
from wehub_backup.pg.streamed_tables import StreamedTable, exclude_table_data_arguments, streamed_tables
from wehub_backup.pg.tool_output import ProgressFilter
from wehub_backup.run.log import Log
from wehub_backup.run.workdir import directory_bytes
from wehub_backup.threads import run_beside

T = TypeVar("T")

_PG_DUMP_LOCK_FAILURE = re.compile(r"could not obtain lock on relation|canceling statement due to (statement|lock) timeout")


@dataclass(frozen=True)
class DumpRequest:
    """What a dump reads and where it writes: the backup's plan and the migration's each make one."""

    workdir: Path
    secrets_dir: Path  # the private password file pg_dump reads
    client: PgClient
    jobs: int
    schemas: list[str]
    excluded_tables: list[tuple[str, str]]
    pg_dump_arguments: list[str]
    large_objects: bool
    # The stream engine's dump: the tables' rows are left out of the archive (they are copied
    # from the snapshot, which stays held after the dump for that copy).
    hold_snapshot: bool = False
    # An incremental run's tables to digest chunk by chunk, cut where the current copy's chunks are.
    chunked: dict[str, ChunkBounds] = field(default_factory=dict)
    # With ``hold_snapshot``: the streamed tables at least this large are not digested beside the dump;
    # the copy digests each in the held snapshot as it lands (0: all are digested here).
    digests_as_copied_from_bytes: int = 0


@dataclass(eq=False)
class HeldSnapshot:
    """A dump's exported snapshot kept open for the stream engine's copy: the snapshot's name, the
    session whose transaction keeps it alive, the relay every source connection passes (so the
    copy's bytes count as egress, and a stall is noticed), and the tables whose rows are copied.

    Between the dump and the copy, and while the copy runs, the session sits idle: the relay lets
    it rest (a stall counts on it only while a statement of its own is unanswered)."""

    snapshot: str
    session: psycopg.Connection
    relay: ByteCountingRelay
    source: ConnectionInfo  # the source reached through the relay
    tables: list[StreamedTable]
    dumped_bytes: int  # what the source had sent when the dump ended: the dump's egress, recorded by its step
    _resources: ExitStack = field(repr=False)
    digests_owed: frozenset[str] = frozenset()  # tables the dump did not digest: the copy does, as each lands
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # the session, one thread at a time
    _closed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.relay.let_rest(self.session)

    def alive(self) -> bool:
        """Whether the snapshot session still answers (its snapshot can still be imported)."""
        with self._lock:
            if self._closed:
                return False
            try:
                self.session.execute("SELECT 1")
            except psycopg.Error:
                return False
        return True

    @contextmanager
    def imported(self) -> Iterator[psycopg.Connection]:
        """A session of its own reading the held snapshot, through the relay (its bytes count as the
        copy's), for a query beside the copy; its lock waits are a reader's of the held tables."""
        with self.source.connect(autocommit=False) as conn:
            conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self.snapshot)))
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(
                sql.Literal(f"{round(held_table_lock_wait_s(self.source.lock_timeout_s) * 1000)}ms")))
            yield conn
            conn.rollback()

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """``work`` on the snapshot's own session, for a query that must read the rows the copy reads."""
        with self._lock:
            return work(self.session)

    @property
    def copied_bytes(self) -> int:
        """What the source has sent since the dump ended: the copy's egress."""
        return self.relay.counters.received_from_server - self.dumped_bytes

    def failure(self, error: BaseException) -> DumpFailed:
        """``error`` of a copy as the run's cause, with the copy's egress so far: a stall, the
        snapshot session gone, or the error's own line."""
        return _dump_failure(self.relay, error, None if self.alive() else SNAPSHOT_LOST, self.dumped_bytes)

    def close(self) -> None:
        """End the snapshot's transaction, its session and the relay; closing twice is harmless."""
        with self._lock:
            self._closed = True
            self._resources.close()


SNAPSHOT_LOST = ("the run's snapshot session on the source was lost (the connection that holds the snapshot the "
                 "copy reads ended): nothing was swapped in; run the backup again")


@dataclass
class DumpResult:
    archive: Path
    artifact_bytes: int
    egress_bytes: int
    seconds: float
    fingerprint: DatabaseFingerprint
    sequences_after: dict[str, int]
    pg_dump: ToolRun
    held: HeldSnapshot | None = field(default=None, repr=False)  # with ``hold_snapshot``, until the copy closes it
    restore_listing: str = ""  # the archive's entries the copy restores, as pg_restore -L reads them (set by
    # the backup's extract step, as are the two below)
    schema_digest: str = ""  # of the schema script those entries make
    archive_rows: bool = False  # whether the archive carries rows of any table the copy restores

    @property
    def run_egress_bytes(self) -> int:
        """What the source sent for the whole copy: the dump's bytes, and the stream engine's COPY after it."""
        return self.egress_bytes + (self.held.copied_bytes if self.held else 0)


def dump_source(request: DumpRequest, source: ConnectionInfo, log: Log, *, low_priority: bool = True,
                progress_dir: Path | None = None) -> DumpResult:
    """pg_dump from a snapshot this function holds, fingerprinting the same snapshot meanwhile.

    All traffic to the source passes the byte-counting relay: ``egress_bytes`` is what crossed
    the wire, and a source that sends nothing for the stall timeout fails the dump instead of
    holding it for ever. The fingerprint runs on the snapshot's own session while pg_dump's
    workers stream, so verifying costs no second pass over the data. A failure is a
    ``DumpFailed`` that still reports what the source had sent by then; with ``progress_dir`` the
    figure is also kept there as it grows, for the next run to record if this one is killed.
    With ``hold_snapshot`` the snapshot's session and the relay stay open in ``DumpResult.held``
    (the caller's to close, or to leave to its run's lifecycle).
    """
    archive = request.workdir / "archive"
    started = time.monotonic()
    with ExitStack() as resources:
        relayed, relay = resources.enter_context(relayed_connection(source, source.stall_timeout_s, progress_dir))
        try:
            snap = resources.enter_context(relayed.connect(autocommit=False))
            tool_run, fingerprint, sequences_after, snapshot, tables, owed = _dump_from_snapshot(
                request, snap, relayed, archive, log, low_priority)
        except Exception as error:
            raise _dump_failure(relay, error) from error
        result = DumpResult(archive, directory_bytes(archive), relay.counters.received_from_server,
                            time.monotonic() - started, fingerprint, sequences_after, tool_run)
        if request.hold_snapshot:
            result.held = HeldSnapshot(snapshot, snap, relay, relayed, tables, result.egress_bytes,
                                       resources.pop_all(), owed)
    return result


def _dump_failure(relay: ByteCountingRelay, error: BaseException, cause: str | None = None,
                  counted_bytes: int = 0) -> DumpFailed:
    """The failure of a dump or a copy, with what the source had sent by then beyond ``counted_bytes``
    (the dump's, when a copy fails: its step has recorded them)."""
    received = relay.counters.received_from_server - counted_bytes
    if relay.stalled_for:
        return SourceStalled(_stall_cause(relay.stalled_for), received)
    if cause:
        return SnapshotLost(cause, received)
    return DumpFailed(error_line(error), received)


def _stall_cause(seconds: float) -> str:
    return (f"no data from the source for {seconds:.0f} s on an open connection (a stopped server process, or a "
            f"network or proxy that stopped forwarding): the dump was stopped; check the source, or raise "
            f"{STALL_TIMEOUT_ENV}")


def _dump_from_snapshot(plan: DumpRequest, snap: psycopg.Connection, source: ConnectionInfo, archive: Path, log: Log,
                        low_priority: bool
                        ) -> tuple[ToolRun, DatabaseFingerprint, dict[str, int], str, list[StreamedTable],
                                   frozenset[str]]:
    """Export a snapshot with the dumped tables locked, run pg_dump in it, and fingerprint it
    meanwhile on the same session; with ``hold_snapshot``, the tables to stream are read in the
    snapshot and their rows left out of the archive, and the transaction stays open. Last, the
    tables whose digests the fingerprint left to the copy (``digests_as_copied_from_bytes``)."""
    snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    snap.read_only = True
    snapshot, tables = export_locked_snapshot(snap, plan.schemas, plan.excluded_tables, source.lock_timeout_s, log)
    streamed = streamed_tables(snap, plan.schemas, plan.excluded_tables) if plan.hold_snapshot else []
    owed = frozenset(table.qualified for table in streamed if plan.digests_as_copied_from_bytes
                     and table.size_bytes >= plan.digests_as_copied_from_bytes and not table.inherited)
    sequences_before = sequence_positions(snap, plan.schemas, plan.excluded_tables)
    argv = [
        plan.client.program("pg_dump"), "--format=directory", f"--jobs={plan.jobs}",
        f"--file={archive}", f"--snapshot={snapshot}", "--no-password", "--no-sync", "--verbose",
        f"--lock-wait-timeout={round(held_table_lock_wait_s(source.lock_timeout_s) * 1000)}",
        *_compression_arguments(plan.client), *plan.pg_dump_arguments, *exclude_table_data_arguments(streamed),
    ]
    with source.tool_environment(plan.secrets_dir / "source.pgpass") as env, \
            ToolProcess(argv, env, on_line=ProgressFilter(log), log=log, low_priority=low_priority) as pg_dump:
        try:
            tool_run, fingerprint = run_beside(
                pg_dump.finish,
                lambda: fingerprint_database(snap, plan.schemas, plan.excluded_tables, sequences_before,
                                             large_objects=plan.large_objects, chunked=plan.chunked, owed=owed),
                "pg-tool", on_failure=pg_dump.stop_because,
            )
        except ToolError as error:
            conflict = _lock_conflict(snap, tables, error)
            if conflict is None:
                raise
            raise LockConflict(conflict) from error
    sequences_after = sequence_positions(snap, plan.schemas, plan.excluded_tables)
    if not plan.hold_snapshot:
        snap.rollback()
    return tool_run, fingerprint, sequences_after, snapshot, streamed, owed


def _lock_conflict(snap: psycopg.Connection, tables: list[DumpedTable], error: ToolError) -> str | None:
    """The session that made pg_dump give way on a lock, when that is why pg_dump failed."""
    if not _PG_DUMP_LOCK_FAILURE.search(str(error)):
        return None
    return gave_way_cause(snap, tables)


def _compression_arguments(client: PgClient) -> list[str]:
    """zstd's fastest level where pg_dump has it (16+), else no compression at all.

    Measured on 1 GB: zstd:1 dumps as fast as no compression and writes a fifth of the
    bytes; gzip, the only method before 16, took 4.0 s at level 1 against 2.3 s uncompressed
    (and more to inflate on restore), to shrink a file that lives only until the copy is verified.
    """
    return ["--compress=zstd:1"] if _compresses(client.major) else ["--compress=0"]


def _compresses(client_major: int) -> bool:
    return client_major >= 16


def dump_description(client_major: int) -> str:
    """What the free space is for, and for an uncompressed dump, how to make it smaller."""
    if _compresses(client_major):
        return "the dump"
    return f"the dump (uncompressed with pg_dump {client_major}; postgresql-client-16 or newer compresses it with zstd)"


# What a dump may write beyond its rows: the schema, the sequences, the table of contents.
DUMP_SLACK_BYTES = 64 * 1024 * 1024


def dump_space_needed(catalog: DatabaseCatalog, client_major: int, rows_in_dump: bool = True) -> int:
    """Free space a dump needs: about the size of what it holds uncompressed, half of it compressed;
    plus slack. Without the rows (the stream engine copies them), it still holds the large objects."""
    held = catalog.table_bytes if rows_in_dump else catalog.large_object_bytes
    return (held // 2 if _compresses(client_major) else held) + DUMP_SLACK_BYTES
