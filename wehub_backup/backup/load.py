"""Load: restore the archive into staging (with the stream engine, the schema around a parallel COPY
of the rows from the held snapshot); any error at all fails the step."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import psycopg
from psycopg import sql

from wehub_backup.backup.increment import IncrementalCopy, incremental_tasks, refine_changed_chunks
from wehub_backup.backup.plan import BackupPlan
from wehub_backup.backup.stage import StagingDatabase
from wehub_backup.backup.verify import DigestsAsTablesLand
from wehub_backup.files import write_private_text
from wehub_backup.pg.chunks import analyze_unanalyzed
from wehub_backup.pg.clients import session_options
from wehub_backup.pg.connection import MAINTENANCE_DATABASE, ConnectionInfo
from wehub_backup.pg.digests import set_stable_output
from wehub_backup.pg.dump import DumpResult, HeldSnapshot
from wehub_backup.pg.processes import ToolProcess, ToolRun, run_pipeline, run_tool
from wehub_backup.pg.snapshot import held_table_lock_wait_s
from wehub_backup.pg.stream import LostConnectionRetries, SourceReader, StreamResult, stream_into_staging
from wehub_backup.pg.streamed_tables import CopyRange, StreamedTable, copy_ranges
from wehub_backup.pg.toc import left_out_count, only_entries, own_index_entries, with_entries, without_entries
from wehub_backup.pg.tool_output import ProgressFilter
from wehub_backup.preflight import connect_or_explain
from wehub_backup.run.log import Log
from wehub_backup.supabase.roles import ensure_standin_roles

T = TypeVar("T")


@dataclass
class RestoreResult:
    seconds: float
    standin_roles_created: list[str]
    pg_restore: ToolRun
    left_out_entries: int
    stream: StreamResult | None = None  # the stream engine's copy
    # pre-data, parts (an incremental run's changed chunks compared in parts), copy, data, post-data
    phase_seconds: dict[str, float] = field(default_factory=dict)
    copy_egress_bytes: int = 0  # what the copy received from the source (the dump's bytes are the dump's)
    increment: IncrementalCopy | None = None  # an incremental run's chunks compared and copied
    landed_digests: DigestsAsTablesLand | None = None  # both sides' of the large tables, taken during the copy


def restore_into_staging(plan: BackupPlan, dump: DumpResult, staged: StagingDatabase, vps: ConnectionInfo, log: Log,
                         *, low_priority: bool = True, before_retry: Callable[[], None]) -> RestoreResult:
    """Restore the archive into staging; any error at all fails the step.

    Supabase's roles come first as NOLOGIN stand-ins, so owners, grants and RLS policies
    restore as they are; entries a vanilla server cannot hold are commented out of the
    restore list (and reported), never silently dropped by ``errors ignored``. Into a staging
    database that is a file copy of the current copy (``staged.from_copy``) only the changed
    rows are written, and of the archive only sequence positions and materialized views' data.
    The stream engine copies a range again after a dropped connection only once ``before_retry``
    (the run's lock check) has passed.
    """
    started = time.monotonic()
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        created = ensure_standin_roles(conn, plan.catalog.roles)
    list_path = plan.workdir / "restore.list"
    with vps.tool_environment(plan.secrets_dir / "vps.pgpass", plan.staging) as env:
        env.update(session_options(plan.restore_settings))
        filtered = dump.restore_listing
        write_private_text(list_path, filtered)

        def restore(section: list[str], listed: Path = list_path) -> ToolRun:
            """pg_restore of the archive's ``section`` as the restore list has it (or ``listed``)."""
            return _run_restore(plan, dump.archive, listed, env, log, low_priority, section)

        if dump.held is None:
            result = RestoreResult(0.0, created, restore([]), left_out_count(filtered))
        elif staged.from_copy:
            changes_list = write_private_text(plan.workdir / "changes.list", only_entries(filtered, CHANGED_STATE))
            result = _restore_around_copy(plan, dump, staged, vps, restore, log,
                                          LostConnectionRetries(dump.held, before_retry, log), functools.partial(
                _run_restore, plan, dump.archive, changes_list, env, log, low_priority, []))
        else:
            indexes = None
            if _restores_directly(plan):  # pg_restore into staging, not a script through psql: it can be stopped
                indexes = IndexesAsTablesLand(
                    functools.partial(_pg_restore_argv, plan, dump.archive, ["--section=post-data"], jobs=1),
                    plan.workdir, filtered, env, log, low_priority)
            retries = LostConnectionRetries(dump.held, before_retry, log)
            digests = DigestsAsTablesLand(retries, vps, plan.staging, staged.oid, plan.landed_digest_bytes,
                                          dump.fingerprint.chunks, plan.base,
                                          indexes.all_built if indexes else None, log)
            result = _restore_around_copy(plan, dump, staged, vps, restore, log, retries, indexes=indexes,
                                          digests=digests)
            result.standin_roles_created, result.left_out_entries = created, left_out_count(filtered)
        if not plan.target_server.autovacuum:
            _analyze(plan, env, log, low_priority)
    result.seconds = time.monotonic() - started
    return result


# What of the archive a file copy of the current copy still needs: nothing else can differ when
# the schema is the same (see ``stage.in_place_refusal``).
CHANGED_STATE = ("SEQUENCE SET", "MATERIALIZED VIEW DATA")


class SectionRestore(Protocol):
    """pg_restore of the archive's ``section``, as the restore list has it or as ``listed`` does."""

    def __call__(self, section: list[str], listed: Path = ...) -> ToolRun: ...


def _restore_around_copy(plan: BackupPlan, dump: DumpResult, staged: StagingDatabase, vps: ConnectionInfo,
                         restore: SectionRestore, log: Log, retries: LostConnectionRetries,
                         in_place: Callable[[], ToolRun] | None = None, *,
                         indexes: IndexesAsTablesLand | None = None,
                         digests: DigestsAsTablesLand | None = None) -> RestoreResult:
    """The stream engine: tables first (pre-data), then the rows by COPY from the held snapshot,
    then what the archive carries (sequences' positions, large objects, rows of tables not
    streamed), then indexes, constraints and triggers (post-data), which build faster over
    loaded tables; a large table's own indexes are built (``indexes``) as soon as its rows are in, then
    staging's digest of it is taken (``digests``).
    The snapshot is closed as soon as the copy has its rows, whatever happens.
    An incremental run takes its unchanged rows from the current copy on the VPS instead; into a
    file copy of that copy (``in_place``), it writes only the changed rows, with triggers and
    foreign keys held (they fired on the source already), then the sequences and the
    materialized views (``in_place`` runs those entries)."""
    held = dump.held
    assert held is not None
    phases: dict[str, float] = {}
    increment = None
    try:
        if in_place is None:
            _timed(phases, "pre-data", lambda: restore(["--section=pre-data"]))
        workers = plan.jobs  # the plan made sure the source and the VPS have the slots for them
        same_major = plan.source.major == plan.target_server.major
        if plan.base is None:
            tasks = copy_ranges(held.tables, plan.range_bytes, plan.source.major)
        else:
            increment = incremental_tasks(held.tables, plan.base, dump.fingerprint, plan.range_bytes,
                                          plan.source.major, in_place=in_place is not None)
            if in_place is not None:
                _timed(phases, "parts", lambda: _refine(increment, vps, plan.staging, held))
            else:
                _timed(phases, "statistics", lambda: _analyze_current_copy(vps, plan.target, increment, log))
            tasks = increment.tasks
            log(increment.describe())
        log(f"copying {len(held.tables)} tables in {len(tasks)} ranges with {workers} workers "
            f"({'binary where the types allow' if same_major else 'text: the servers differ in major version'})")
        try:
            with ExitStack() as environments:
                env = environments.enter_context(held.source.tool_environment(plan.secrets_dir / "copy.pgpass"))
                psql = plan.client.program("psql")
                reader = SourceReader(psql, env, plan.source.encoding,
                                      held_table_lock_wait_s(held.source.lock_timeout_s), plan.source.version_num)
                copy_reader = None if plan.base is None or in_place else SourceReader(psql, environments.enter_context(
                    vps.tool_environment(plan.secrets_dir / "copy-vps.pgpass", plan.target)), plan.source.encoding,
                    vps.lock_timeout_s, plan.target_server.version_num)
                settings = {**plan.restore_settings, **(HELD_TRIGGERS if in_place else {})}
                streamed = _timed(phases, "copy", lambda: stream_into_staging(
                    held, reader, vps, plan.staging, tasks, workers, lambda table: same_major and table.binary_io,
                    settings, log, copy_reader, staging_oid=staged.oid, retries=retries,
                    table_copied=_once_landed(digests.source_side if digests else None, indexes,
                                              digests.staging_side if digests else None)))
        except psycopg.Error as error:
            raise held.failure(error) from error
    finally:
        held.close()
    copy_egress = held.copied_bytes  # closed: the relay counts no more
    if in_place is not None:
        unpopulate_materialized_views(vps, plan.staging, plan.kept_schemas)
        tool_run = _timed(phases, "data", in_place)
    else:
        _timed(phases, "data", lambda: restore(["--section=data"]))
        if indexes is None:
            tool_run = _timed(phases, "post-data", lambda: restore(["--section=post-data"]))
        else:
            phases["copy-indexes"] = indexes.seconds
            tool_run = _timed(phases, "post-data", lambda: restore(["--section=post-data"], indexes.post_data_list()))
    if digests is not None:
        phases["copy-digests"] = digests.seconds
    return RestoreResult(0.0, [], tool_run, 0, streamed, phases, copy_egress, increment, digests)


def _once_landed(*steps: Callable[[StreamedTable, threading.Event], None] | None
                 ) -> Callable[[StreamedTable, threading.Event], None]:
    """What the worker that copied a table's last range does next: ``steps`` in order."""
    def landed(table: StreamedTable, stopping: threading.Event) -> None:
        for step in steps:
            if step is not None:
                step(table, stopping)
    return landed


def _refine(increment: IncrementalCopy, vps: ConnectionInfo, staging: str, held: HeldSnapshot) -> None:
    """The changed chunks compared again in parts (``refine_changed_chunks``), staging read as digests
    read it; first the tables whose ranges are replaced get planner statistics where they have none."""
    with connect_or_explain(vps, "the VPS server", staging) as conn:
        analyze_unanalyzed(conn, _read_by_key_ranges(increment.tasks))
        set_stable_output(conn)
        try:
            refine_changed_chunks(increment, conn, held.run)
        except psycopg.Error as error:
            raise held.failure(error) from error


def _analyze_current_copy(vps: ConnectionInfo, target: str, increment: IncrementalCopy, log: Log) -> None:
    """Planner statistics for the current copy's tables whose kept chunks staging reads from it by
    key ranges, where it has none (a copy restored shortly before, not yet seen by autovacuum):
    without them, hundreds of ranges read a table's whole index. ANALYZE samples the table and
    changes no row; the application's sessions on the copy go on."""
    with connect_or_explain(vps, "the VPS server", target) as conn:
        analyzed = analyze_unanalyzed(conn, _read_by_key_ranges([task for task in increment.tasks if task.from_copy]))
    if analyzed:
        log(f"planner statistics gathered on the current copy for {len(analyzed)} tables read by key ranges")


def _read_by_key_ranges(tasks: list[CopyRange]) -> list[str]:
    """The tables of which ``tasks`` read or replace chosen key ranges, which the key's index finds
    only on an analyzed table."""
    return sorted({task.table.qualified for task in tasks if task.selection is not None})


# A file copy's rows are replaced as they are: its triggers and foreign keys (triggers too) stay
# still, as pg_restore's data section never fires them (the VPS login is a superuser).
HELD_TRIGGERS = {"session_replication_role": "replica"}


def unpopulate_materialized_views(vps: ConnectionInfo, database: str, schemas: list[str]) -> None:
    """Empty the file copy's materialized views: the archive's data entries refresh those that hold
    data on the source, after the rows they read are in; the others stay unpopulated, as there."""
    with connect_or_explain(vps, "the VPS server", database) as conn:
        views = conn.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                             "WHERE c.relkind = 'm' AND c.relispopulated AND n.nspname = ANY(%s)", (schemas,)).fetchall()
        for schema, name in views:
            conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {} WITH NO DATA").format(sql.Identifier(schema, name)))


def _timed(phases: dict[str, float], name: str, step: Callable[[], T]) -> T:
    started = time.monotonic()
    try:
        return step()
    finally:
        phases[name] = time.monotonic() - started


# A table at least this large has its own indexes built as soon as its rows are in: a smaller
# one's take less time than the pg_restore started for them, and wait for the post-data section.
EARLY_INDEXES_FROM_BYTES = 32 * 2**20
# How often a table's index build looks whether the copy was stopped (and stops pg_restore then).
STOP_POLL_S = 0.2


@dataclass
class IndexesAsTablesLand:
    """A large table's indexes and key constraints built as soon as its rows are in, while the
    other tables copy, by the copy worker that copied its last range, in one session (so no more
    sessions run than the copy's, which the plan made room for). The rest of the post-data section
    (foreign keys, which read other tables, triggers, policies, comments, the small tables' indexes)
    is built after the copy, as before."""

    pg_restore: Callable[[Path], list[str]]  # the argv of a pg_restore of a list's post-data entries, in one session
    workdir: Path
    listing: str  # the restore list
    env: dict[str, str]
    log: Log
    low_priority: bool
    built: set[int] = field(default_factory=set)  # dump IDs
    seconds: float = 0.0
    _entries: dict[tuple[int, int], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._entries = own_index_entries(self.listing)

    def __call__(self, table: StreamedTable, stopping: threading.Event) -> None:
        """Build ``table``'s own indexes now, unless it is small; stop pg_restore once ``stopping`` is set."""
        ids = self._own_entries(table)
        if not ids or table.size_bytes < EARLY_INDEXES_FROM_BYTES:
            return
        started = time.monotonic()
        list_path = write_private_text(self.workdir / f"indexes-{table.oid}.list", with_entries(self.listing, ids))
        with ToolProcess(self.pg_restore(list_path), self.env, on_line=ProgressFilter(self.log), log=self.log,
                         low_priority=self.low_priority) as child:
            while not child.wait(STOP_POLL_S):
                if stopping.is_set():
                    raise psycopg.OperationalError(f"the copy was stopped while {table.qualified}'s indexes were built")
            child.finish()
        seconds = time.monotonic() - started
        self.log(f"{table.qualified}: {len(ids)} indexes and key constraints built as soon as its rows were in "
                 f"({seconds:.1f} s)")
        with self._lock:
            self.built |= ids
            self.seconds += seconds

    def _own_entries(self, table: StreamedTable) -> set[int]:
        """The dump IDs of ``table``'s own indexes and key constraints that the restore list holds."""
        return {self._entries[key] for key in table.own_indexes if key in self._entries}

    def all_built(self, table: StreamedTable) -> bool:
        """Whether every index and key constraint of ``table``'s own is built (or it has none)."""
        with self._lock:
            return self._own_entries(table) <= self.built

    def post_data_list(self) -> Path:
        """The restore list for the post-data section after the copy: the entries built during it
        commented out (the restore list itself stays as the pre-data and data sections read it)."""
        return write_private_text(self.workdir / "post-data.list", without_entries(self.listing, self.built))


def _pg_restore_argv(plan: BackupPlan, archive: Path, section: list[str], list_path: Path, *, jobs: int) -> list[str]:
    """pg_restore straight into staging, stopping at its first error."""
    return [plan.client.program("pg_restore"), f"--dbname={plan.staging}", f"--jobs={jobs}", "--exit-on-error",
            "--no-password", "--verbose", *_restore_options(archive, list_path, section)]


def _restore_options(archive: Path, list_path: Path, section: list[str]) -> list[str]:
    return ["--no-tablespaces", "--no-security-labels", *section, f"--use-list={list_path}", str(archive)]


def _restores_directly(plan: BackupPlan) -> bool:
    """Whether pg_restore can write into the VPS server itself: it is no newer than the server."""
    return plan.client.major <= plan.target_server.major


def _run_restore(plan: BackupPlan, archive: Path, list_path: Path, env: dict[str, str], log: Log,
                 low_priority: bool, section: list[str]) -> ToolRun:
    """Parallel pg_restore straight into staging, or, when the tools are newer than the VPS
    server, pg_restore's script through psql (a newer pg_restore sets parameters an older
    server rejects, and an older pg_restore cannot read the newer archive)."""
    if _restores_directly(plan):
        argv = _pg_restore_argv(plan, archive, section, list_path, jobs=plan.jobs)
        return run_tool(argv, env, on_line=ProgressFilter(log), log=log, low_priority=low_priority)
    log(f"pg_restore {plan.client.version} is newer than the VPS server {plan.target_server.version}: "
        "restoring through a script")
    _, consumer = run_pipeline(
        [plan.client.program("pg_restore"), "--file=-", *_restore_options(archive, list_path, section)],
        [plan.client.program("psql"), "--no-psqlrc", "--quiet", "--no-password", "-v", "ON_ERROR_STOP=1",
         f"--dbname={plan.staging}"],
        env, server_major=plan.target_server.major, on_line=ProgressFilter(log), log=log,
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
    run_tool([plan.client.program("vacuumdb"), "--analyze-only", f"--jobs={plan.jobs}", "--no-password",
             f"--dbname={plan.staging}"], env, log=log, low_priority=low_priority)
