"""The backup, Supabase -> VPS, as plain functions: plan, dump, stage, restore, verify, promote.

Each step is callable without Dagster (the ops in ``ops.py`` are thin wrappers), and each
raises an exception whose message is one line an operator can act on.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg

from wehub_backup import databases, pgtools
from wehub_backup.catalog import DatabaseCatalog, ServerInfo, available_extensions, read_catalog, server_info
from wehub_backup.fingerprint import DatabaseFingerprint, compare_fingerprints, fingerprint_database, sequence_positions
from wehub_backup.pgtools import PgClient, ToolRun
from wehub_backup.preflight import (
    MAINTENANCE_DATABASE,
    PreflightError,
    connect_or_explain,
    error_line,
    first_of,
    money_settings,
)
from wehub_backup.runlog import directory_bytes, space_shortfall
from wehub_backup.settings import ConnectionInfo, is_local_host
from wehub_backup.supabase_compat import (
    CopyScope,
    dependents_on_left_out,
    ensure_standin_roles,
    filter_archive_listing,
    plan_scope,
)
from wehub_backup.wire import counted_connection

Log = Callable[[str], None]
_LEFT_OUT_ENTRY = re.compile(r"^;\d+;")


class DumpFailed(RuntimeError):
    """The dump failed; what the source had sent by then still counts against the egress budget."""

    def __init__(self, message: str, egress_bytes: int) -> None:
        super().__init__(message)
        self.egress_bytes = egress_bytes


class VerificationFailed(RuntimeError):
    """The restored copy differs from the source snapshot."""


@dataclass
class BackupPlan:
    """Everything decided before the first byte is copied."""

    target: str
    source: ServerInfo
    target_server: ServerInfo
    catalog: DatabaseCatalog
    scope: CopyScope
    client: PgClient
    workdir: Path
    jobs: int
    restore_settings: dict[str, str] = field(default_factory=dict)  # for the restore's sessions
    copies_large_objects = True  # pg_dump takes them unless told --schema

    @property
    def staging(self) -> str:
        return databases.staging_name(self.target)

    @property
    def kept_schemas(self) -> list[str]:
        return self.scope.kept_schemas(self.catalog.schemas)

    @property
    def excluded_tables(self) -> list[tuple[str, str]]:
        return self.scope.excluded_tables

    def pg_dump_arguments(self) -> list[str]:
        return self.scope.pg_dump_arguments()


class DumpPlan(Protocol):
    """What ``dump_source`` needs to know: the backup's plan and the migration's both provide it."""

    workdir: Path
    client: PgClient
    jobs: int
    copies_large_objects: bool

    @property
    def kept_schemas(self) -> list[str]: ...

    @property
    def excluded_tables(self) -> list[tuple[str, str]]: ...

    def pg_dump_arguments(self) -> list[str]: ...


@dataclass
class DumpResult:
    archive: Path
    artifact_bytes: int
    egress_bytes: int
    seconds: float
    fingerprint: DatabaseFingerprint
    sequences_after: dict[str, int]
    pg_dump: ToolRun


@dataclass
class RestoreResult:
    seconds: float
    standin_roles_created: list[str]
    pg_restore: ToolRun
    left_out_entries: int


@dataclass
class VerificationResult:
    seconds: float
    tables: int
    rows: int
    fingerprint: DatabaseFingerprint = field(repr=False, default_factory=DatabaseFingerprint)


def plan_backup(
    target: str,
    source: ConnectionInfo,
    vps: ConnectionInfo,
    workdir: Path,
    *,
    excluded_schemas: list[str],
    excluded_tables: list[str],
    extra_bindirs: list[Path],
    jobs: int,
) -> BackupPlan:
    """Check everything that can be checked without changing anything, and decide the scope."""
    forbidden = {databases.dagster_storage_database(): "Dagster's storage database"}
    if _same_server(source, vps):
        forbidden[source.dbname] = "the source database itself (source and VPS are the same server)"
    databases.validate_target_name(target, forbidden=forbidden)
    with connect_or_explain(source, "the Supabase source") as conn:
        catalog = read_catalog(conn)
        try:
            client = pgtools.choose_client(catalog.server.major, extra_bindirs)
        except pgtools.VersionMismatch as error:
            raise PreflightError(str(error)) from None
        with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as vps_conn:
            target_server = server_info(vps_conn)
            require_superuser(target_server)
            scope = plan_scope(catalog, available_extensions(vps_conn), excluded_schemas, excluded_tables)
            restore_settings = money_settings(conn, vps_conn, scope.kept_schemas(catalog.schemas), "the VPS server")
        unrestorable = dependents_on_left_out(conn, scope)
    if unrestorable:
        raise PreflightError(f"{first_of(unrestorable)}: make it available on the VPS (an extension package) "
                             "or leave the dependent out too (excluded_tables)")
    shortfall = space_shortfall(workdir.parent, dump_space_needed(catalog, client.major), dump_description(client.major))
    if shortfall:
        raise PreflightError(shortfall)
    return BackupPlan(target, catalog.server, target_server, catalog, scope, client, workdir, jobs, restore_settings)


def require_superuser(vps_server: ServerInfo) -> None:
    """The VPS login must be a superuser: it recreates Supabase's roles and restores objects they own."""
    if not vps_server.superuser:
        raise PreflightError(
            f"VPS user {vps_server.current_user} must be a superuser on the VPS server: it recreates "
            "Supabase's roles and restores objects they own"
        )


def dump_space_needed(catalog: DatabaseCatalog, client_major: int) -> int:
    """Free space a dump needs: about the tables' size uncompressed, half of it compressed; plus slack."""
    tables = catalog.table_bytes // 2 if _compresses(client_major) else catalog.table_bytes
    return tables + 64 * 1024 * 1024


def _same_server(a: ConnectionInfo, b: ConnectionInfo) -> bool:
    same_host = a.host == b.host or (is_local_host(a.host) and is_local_host(b.host))
    return same_host and (a.lookup_port or a.port) == (b.lookup_port or b.port)


def dump_source(plan: DumpPlan, source: ConnectionInfo, log: Log, *, low_priority: bool = True,
                count_egress: bool = True) -> DumpResult:
    """pg_dump from a snapshot this function holds, fingerprinting the same snapshot meanwhile.

    With ``count_egress`` all traffic to the source passes the byte-counting relay, so the
    egress figure is what crossed the wire. The fingerprint runs on the snapshot's own
    session while pg_dump's workers stream, so verifying costs no second pass over the data.
    """
    archive = plan.workdir / "archive"
    started = time.monotonic()
    with counted_connection(source, count_egress) as (relayed, counters):
        try:
            tool_run, fingerprint, sequences_after = _dump_from_snapshot(plan, relayed, archive, log, low_priority)
        except Exception as error:
            raise DumpFailed(error_line(error), counters.received_from_server) from error
    return DumpResult(archive, directory_bytes(archive), counters.received_from_server, time.monotonic() - started,
                      fingerprint, sequences_after, tool_run)


def _dump_from_snapshot(plan: DumpPlan, source: ConnectionInfo, archive: Path, log: Log,
                        low_priority: bool) -> tuple[ToolRun, DatabaseFingerprint, dict[str, int]]:
    """Export a snapshot, run pg_dump in it, and fingerprint it meanwhile on the same session."""
    with source.connect(autocommit=False) as snap:
        snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snap.read_only = True
        snapshot = snap.execute("SELECT pg_export_snapshot()").fetchone()[0]
        sequences_before = sequence_positions(snap, plan.kept_schemas, plan.excluded_tables)
        argv = [
            plan.client.program("pg_dump"), "--format=directory", f"--jobs={plan.jobs}",
            f"--file={archive}", f"--snapshot={snapshot}", "--no-password", "--no-sync", "--verbose",
            *_compression_arguments(plan.client), *plan.pg_dump_arguments(),
        ]
        with source.tool_environment(plan.workdir / "source.pgpass") as env:
            tool_run, fingerprint = _run_beside(
                lambda: pgtools.run_tool(argv, env, on_line=_ProgressFilter(log), low_priority=low_priority),
                lambda: fingerprint_database(snap, plan.kept_schemas, plan.excluded_tables, sequences_before,
                                             large_objects=plan.copies_large_objects),
            )
        sequences_after = sequence_positions(snap, plan.kept_schemas, plan.excluded_tables)
        snap.rollback()
    return tool_run, fingerprint, sequences_after


def _run_beside(main: Callable, beside: Callable) -> tuple:
    """Run ``main`` in a thread and ``beside`` here; re-raise the first failure."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = main()
        except BaseException as error:  # noqa: BLE001 - handed back to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=target, name="pg-tool", daemon=True)
    thread.start()
    try:
        side = beside()
    finally:
        thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"], side


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


class _ProgressFilter:
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


def recreate_staging(plan: BackupPlan, vps: ConnectionInfo) -> None:
    """Drop any leftover staging database and create an empty one (never touching the target)."""
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        databases.drop_database(conn, plan.staging)
        databases.create_database(conn, plan.staging, plan.source.encoding)


def restore_into_staging(plan: BackupPlan, dump: DumpResult, vps: ConnectionInfo, log: Log,
                         *, low_priority: bool = True) -> RestoreResult:
    """Restore the archive into staging; any error at all fails the step.

    Supabase's roles come first as NOLOGIN stand-ins, so owners, grants and RLS policies
    restore as they are; entries a vanilla server cannot hold are commented out of the
    restore list (and reported), never silently dropped by ``errors ignored``.
    """
    started = time.monotonic()
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        created = ensure_standin_roles(conn, plan.catalog.roles)
    listing_path, list_path = plan.workdir / "archive.listing", plan.workdir / "restore.list"
    with vps.tool_environment(plan.workdir / "vps.pgpass", plan.staging) as env:
        env.update(pgtools.session_options(plan.restore_settings))
        filtered = filter_archive_listing(pgtools.archive_listing(plan.client, dump.archive, env, listing_path),
                                          plan.scope)
        list_path.write_text(filtered, encoding="utf-8")
        tool_run = _run_restore(plan, dump.archive, list_path, env, log, low_priority)
        if not plan.target_server.autovacuum:
            _analyze(plan, env, log, low_priority)
    skipped = sum(1 for line in filtered.splitlines() if _LEFT_OUT_ENTRY.match(line))
    return RestoreResult(time.monotonic() - started, created, tool_run, skipped)


def _run_restore(plan: BackupPlan, archive: Path, list_path: Path, env: dict[str, str], log: Log,
                 low_priority: bool) -> ToolRun:
    """Parallel pg_restore straight into staging, or, when the tools are newer than the VPS
    server, pg_restore's script through psql (a newer pg_restore sets parameters an older
    server rejects, and an older pg_restore cannot read the newer archive)."""
    common = ["--no-tablespaces", "--no-security-labels", f"--use-list={list_path}", str(archive)]
    if plan.client.major <= plan.target_server.major:
        argv = [plan.client.program("pg_restore"), f"--dbname={plan.staging}", f"--jobs={plan.jobs}",
                "--exit-on-error", "--no-password", "--verbose", *common]
        return pgtools.run_tool(argv, env, on_line=_ProgressFilter(log), low_priority=low_priority)
    log(f"pg_restore {plan.client.version} is newer than the VPS server {plan.target_server.version}: "
        "restoring through a script")
    _, consumer = pgtools.run_pipeline(
        [plan.client.program("pg_restore"), "--file=-", *common],
        [plan.client.program("psql"), "--no-psqlrc", "--quiet", "--no-password", "-v", "ON_ERROR_STOP=1",
         f"--dbname={plan.staging}"],
        env, server_major=plan.target_server.major, on_line=_ProgressFilter(log),
        low_priority=low_priority,
    )
    return consumer


def _analyze(plan: BackupPlan, env: dict[str, str], log: Log, low_priority: bool) -> None:
    """Planner statistics for the copy, when nothing else will gather them.

    pg_restore leaves none. With autovacuum on (the default), the restored tables' inserts
    make autovacuum vacuum and analyze them within a minute or so, in the pass it makes
    anyway; analyzing here as well would double that work inside the run.
    """
    log("autovacuum is off on the VPS server: gathering planner statistics for the copy")
    pgtools.run_tool([plan.client.program("vacuumdb"), "--analyze-only", f"--jobs={plan.jobs}", "--no-password",
                      f"--dbname={plan.staging}"], env, low_priority=low_priority)


def verify_staging(plan: BackupPlan, dump: DumpResult, vps: ConnectionInfo) -> VerificationResult:
    """Fingerprint staging and compare with the source snapshot; raise on any difference."""
    started = time.monotonic()
    with connect_or_explain(vps, "the VPS server", plan.staging) as conn:
        copy = fingerprint_database(conn, plan.kept_schemas, plan.scope.excluded_tables,
                                    large_objects=plan.copies_large_objects)
    problems = compare_fingerprints(dump.fingerprint, copy, dump.sequences_after)
    if problems:
        raise VerificationFailed(f"verification failed: {first_of(problems)}")
    return VerificationResult(time.monotonic() - started, len(copy.tables), copy.total_rows, copy)


def promote(plan: BackupPlan, vps: ConnectionInfo, policy: databases.SessionPolicy, timeout_seconds: float) -> databases.PromoteResult:
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        return databases.promote_staging(conn, plan.target, policy, timeout_seconds)


def drop_staging(vps: ConnectionInfo, target: str) -> bool:
    """After a failure: the unverified staging copy goes, the target is never touched."""
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        return databases.drop_database(conn, databases.staging_name(target))
