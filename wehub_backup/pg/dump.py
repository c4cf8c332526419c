"""pg_dump from a snapshot this project holds, fingerprinted in the same snapshot meanwhile.

Both jobs extract this way: the backup from Supabase (every byte counted as egress), the
migration from the VPS database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from wehub_backup.pg.catalog import DatabaseCatalog
from wehub_backup.pg.clients import PgClient
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.fingerprint import DatabaseFingerprint, fingerprint_database, sequence_positions
from wehub_backup.pg.processes import Log, ProgressFilter, ToolRun, run_tool
from wehub_backup.run.workdir import directory_bytes
from wehub_backup.threads import run_beside


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


def dump_source(request: DumpRequest, source: ConnectionInfo, log: Log, *, low_priority: bool = True) -> DumpResult:
    """pg_dump from a snapshot this function holds, fingerprinting the same snapshot meanwhile.

    The fingerprint runs on the snapshot's own session while pg_dump's workers stream, so
    verifying costs no second pass over the data. ``egress_bytes`` is left to the caller.
    """
    archive = request.workdir / "archive"
    started = time.monotonic()
    tool_run, fingerprint, sequences_after = _dump_from_snapshot(request, source, archive, log, low_priority)
    return DumpResult(archive, directory_bytes(archive), 0, time.monotonic() - started,
                      fingerprint, sequences_after, tool_run)


def _dump_from_snapshot(plan: DumpRequest, source: ConnectionInfo, archive: Path, log: Log,
                        low_priority: bool) -> tuple[ToolRun, DatabaseFingerprint, dict[str, int]]:
    """Export a snapshot, run pg_dump in it, and fingerprint it meanwhile on the same session."""
    with source.connect(autocommit=False) as snap:
        snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snap.read_only = True
        snapshot = snap.execute("SELECT pg_export_snapshot()").fetchone()[0]
        sequences_before = sequence_positions(snap, plan.schemas, plan.excluded_tables)
        argv = [
            plan.client.program("pg_dump"), "--format=directory", f"--jobs={plan.jobs}",
            f"--file={archive}", f"--snapshot={snapshot}", "--no-password", "--no-sync", "--verbose",
            *_compression_arguments(plan.client), *plan.pg_dump_arguments,
        ]
        with source.tool_environment(plan.secrets_dir / "source.pgpass") as env:
            tool_run, fingerprint = run_beside(
                lambda: run_tool(argv, env, on_line=ProgressFilter(log), low_priority=low_priority),
                lambda: fingerprint_database(snap, plan.schemas, plan.excluded_tables, sequences_before,
                                             large_objects=plan.large_objects),
                "pg-tool",
            )
        sequences_after = sequence_positions(snap, plan.schemas, plan.excluded_tables)
        snap.rollback()
    return tool_run, fingerprint, sequences_after


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
