"""pg_dump from a snapshot this project holds, fingerprinted in the same snapshot meanwhile.

Both jobs extract this way: the backup from Supabase (every byte counted as egress), the
migration from the VPS database.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from wehub_backup.config import STALL_TIMEOUT_ENV
from wehub_backup.errors import DumpFailed, LockConflict, SourceStalled, ToolError
from wehub_backup.pg.catalog import DatabaseCatalog
from wehub_backup.pg.clients import PgClient
from wehub_backup.pg.connection import ConnectionInfo, error_line
from wehub_backup.pg.fingerprint import DatabaseFingerprint, fingerprint_database, sequence_positions
from wehub_backup.pg.processes import Log, ProgressFilter, ToolProcess, ToolRun
from wehub_backup.pg.relay import relayed_connection
from wehub_backup.pg.snapshot import DumpedTable, export_locked_snapshot, gave_way_cause
from wehub_backup.run.workdir import directory_bytes
from wehub_backup.threads import run_beside

# pg_dump's own lock wait. Every table it locks, the snapshot session has locked already, so it
# can only wait behind a session that asked for ACCESS EXCLUSIVE after that: a session that waits
# for the dump to end. Waiting longer cannot help; giving way soon lets that session (an app's
# migration, say) go on before its own timeouts fail it.
PG_DUMP_LOCK_WAIT_S = 10
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


@dataclass
class DumpResult:
    archive: Path
    artifact_bytes: int
    egress_bytes: int
    seconds: float
    fingerprint: DatabaseFingerprint
    sequences_after: dict[str, int]
    pg_dump: ToolRun


def dump_source(request: DumpRequest, source: ConnectionInfo, log: Log, *, low_priority: bool = True,
                progress_dir: Path | None = None) -> DumpResult:
    """pg_dump from a snapshot this function holds, fingerprinting the same snapshot meanwhile.

    All traffic to the source passes the byte-counting relay: ``egress_bytes`` is what crossed
    the wire, and a source that sends nothing for the stall timeout fails the dump instead of
    holding it for ever. The fingerprint runs on the snapshot's own session while pg_dump's
    workers stream, so verifying costs no second pass over the data. A failure is a
    ``DumpFailed`` that still reports what the source had sent by then; with ``progress_dir`` the
    figure is also kept there as it grows, for the next run to record if this one is killed.
    """
    archive = request.workdir / "archive"
    started = time.monotonic()
    with relayed_connection(source, source.stall_timeout_s, progress_dir) as (relayed, relay):
        try:
            tool_run, fingerprint, sequences_after = _dump_from_snapshot(request, relayed, archive, log, low_priority)
        except Exception as error:
            received = relay.counters.received_from_server
            if relay.stalled_for:
                raise SourceStalled(_stall_cause(relay.stalled_for), received) from error
            raise DumpFailed(error_line(error), received) from error
    return DumpResult(archive, directory_bytes(archive), relay.counters.received_from_server,
                      time.monotonic() - started, fingerprint, sequences_after, tool_run)


def _stall_cause(seconds: float) -> str:
    return (f"no data from the source for {seconds:.0f} s on an open connection (a stopped server process, or a "
            f"network or proxy that stopped forwarding): the dump was stopped; check the source, or raise "
            f"{STALL_TIMEOUT_ENV}")


def _dump_from_snapshot(plan: DumpRequest, source: ConnectionInfo, archive: Path, log: Log,
                        low_priority: bool) -> tuple[ToolRun, DatabaseFingerprint, dict[str, int]]:
    """Export a snapshot with the dumped tables locked, run pg_dump in it, and fingerprint it
    meanwhile on the same session."""
    with source.connect(autocommit=False) as snap:
        snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snap.read_only = True
        snapshot, tables = export_locked_snapshot(snap, plan.schemas, plan.excluded_tables, source.lock_timeout_s, log)
        sequences_before = sequence_positions(snap, plan.schemas, plan.excluded_tables)
        argv = [
            plan.client.program("pg_dump"), "--format=directory", f"--jobs={plan.jobs}",
            f"--file={archive}", f"--snapshot={snapshot}", "--no-password", "--no-sync", "--verbose",
            f"--lock-wait-timeout={round(min(source.lock_timeout_s, PG_DUMP_LOCK_WAIT_S) * 1000)}",
            *_compression_arguments(plan.client), *plan.pg_dump_arguments,
        ]
        with source.tool_environment(plan.secrets_dir / "source.pgpass") as env, \
                ToolProcess(argv, env, on_line=ProgressFilter(log), log=log, low_priority=low_priority) as pg_dump:
            try:
                tool_run, fingerprint = run_beside(
                    pg_dump.finish,
                    lambda: fingerprint_database(snap, plan.schemas, plan.excluded_tables, sequences_before,
                                                 large_objects=plan.large_objects),
                    "pg-tool", on_failure=pg_dump.stop_because,
                )
            except ToolError as error:
                conflict = _lock_conflict(snap, tables, error)
                if conflict is None:
                    raise
                raise LockConflict(conflict) from error
        sequences_after = sequence_positions(snap, plan.schemas, plan.excluded_tables)
        snap.rollback()
    return tool_run, fingerprint, sequences_after


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


def dump_space_needed(catalog: DatabaseCatalog, client_major: int) -> int:
    """Free space a dump needs: about the tables' size uncompressed, half of it compressed; plus slack."""
    tables = catalog.table_bytes // 2 if _compresses(client_major) else catalog.table_bytes
    return tables + 64 * 1024 * 1024
