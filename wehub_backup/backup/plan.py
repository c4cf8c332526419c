"""Plan a backup: everything checked and decided before the first byte is copied."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psycopg

from wehub_backup.backup.increment import FULL, INCREMENTAL, IncrementBase, choose_mode, read_increment_base
from wehub_backup.config import (
    COPY_RANGE_ENV,
    DEFAULT_COPY_ENGINE,
    DEFAULT_COPY_RANGE_MB,
    dagster_storage_database,
)
from wehub_backup.errors import NotEnoughSpace, NotSuperuser, PreflightError, SettingsError, first_of
from wehub_backup.pg.catalog import DatabaseCatalog, ServerInfo, available_extensions, read_catalog, server_info
from wehub_backup.pg.clients import PgClient, choose_client
from wehub_backup.pg.connection import MAINTENANCE_DATABASE, ConnectionInfo, is_local_host
from wehub_backup.pg.dump import DumpRequest, dump_description, dump_space_needed
from wehub_backup.preflight import connect_or_explain, money_settings, require_connection_slots
from wehub_backup.run.manifest import chunk_record_path, read_chunks
from wehub_backup.run.marks import check_replaceable, source_identity
from wehub_backup.run.targets import staging_name, validate_target_name
from wehub_backup.run.workdir import space_shortfall
from wehub_backup.supabase.scope import CopyScope, dependents_on_left_out, plan_scope

# A streamed table at least this large is digested as soon as its rows are in, while the other tables
# copy: on the source in the held snapshot, and in staging once its own indexes are built too. The
# smaller ones are digested together, a statement for hundreds of them, beside the dump and in the
# verification step: one each would cost a round trip and a session each.
LANDED_DIGEST_FROM_BYTES = 32 * 2**20


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
    secrets_dir: Path  # the private password files of the run's child processes
    jobs: int
    copy_of: str  # the source, as the copies' marks name it
    adopt: bool = False  # accept databases without the project's mark (an operator's explicit choice)
    restore_settings: dict[str, str] = field(default_factory=dict)  # for the restore's sessions
    copy_engine: str = DEFAULT_COPY_ENGINE  # "archive": pg_dump to disk, then pg_restore; "stream": COPY into staging
    range_bytes: int = DEFAULT_COPY_RANGE_MB * 2**20  # the stream engine copies a larger table in page ranges
    mode: str = FULL  # "incremental": staging from the current copy, only changed chunks from the source
    mode_reason: str = ""
    base: IncrementBase | None = None  # the current copy an incremental run builds on
    manifest_file: Path | None = None  # the record of the target's verified copy (run/manifest.py)

    @property
    def streams(self) -> bool:
        """Whether rows come by COPY from a held snapshot: the stream engine, and every incremental run."""
        return self.copy_engine == "stream" or self.base is not None

    @property
    def staging(self) -> str:
        return staging_name(self.target)

    @property
    def kept_schemas(self) -> list[str]:
        return self.scope.kept_schemas(self.catalog.schemas)

    @property
    def excluded_tables(self) -> list[tuple[str, str]]:
        return self.scope.excluded_tables

    @property
    def landed_digest_bytes(self) -> int:
        """How large a streamed table is that is digested as it lands (``LANDED_DIGEST_FROM_BYTES``)."""
        return LANDED_DIGEST_FROM_BYTES

    def dump_request(self) -> DumpRequest:
        """The whole database but what the scope leaves out, large objects included; with the stream
        engine, without the rows the copy carries, and the snapshot held for that copy. A full copy's
        large tables are digested on the source as they land, not beside the dump; an incremental
        run compares their chunks' digests before it copies."""
        return DumpRequest(self.workdir, self.secrets_dir, self.client, self.jobs, self.kept_schemas,
                           self.excluded_tables, self.scope.pg_dump_arguments(), large_objects=True,
                           hold_snapshot=self.streams, chunked=self.base.chunked() if self.base else {},
                           digests_as_copied_from_bytes=self.landed_digest_bytes if self.base is None else 0)


def plan_backup(
    target: str,
    source: ConnectionInfo,
    vps: ConnectionInfo,
    workdir: Path,
    *,
    secrets_dir: Path,
    excluded_schemas: list[str],
    excluded_tables: list[str],
    extra_bindirs: list[Path],
    jobs: int,
    adopt: bool = False,
    copy_engine: str = DEFAULT_COPY_ENGINE,
    range_bytes: int = DEFAULT_COPY_RANGE_MB * 2**20,
) -> BackupPlan:
    """Check everything that can be checked without changing anything, and decide the scope.

    ``copy_engine`` is one of ``config.COPY_ENGINES``, as ``config.copy_engine`` chose it."""
    if range_bytes < 1:
        raise SettingsError(f"{COPY_RANGE_ENV} must be at least 1 (MB), not {range_bytes // 2**20}")
    forbidden = {dagster_storage_database(): "Dagster's storage database"}
    if _same_server(source, vps):
        forbidden[source.dbname] = "the source database itself (source and VPS are the same server)"
    validate_target_name(target, forbidden=forbidden)
    with connect_or_explain(source, "the Supabase source") as conn:
        catalog = read_catalog(conn)
        client = choose_client(catalog.server.major, extra_bindirs)
        require_source_slots(conn, jobs, copy_engine)
        with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as vps_conn:
            target_server = server_info(vps_conn)
            require_superuser(target_server)
            require_vps_slots(vps_conn, client, target_server, jobs, copy_engine)
            scope = plan_scope(catalog, available_extensions(vps_conn), excluded_schemas, excluded_tables)
            restore_settings = money_settings(conn, vps_conn, scope.kept_schemas(catalog.schemas), "the VPS server")
        unrestorable = dependents_on_left_out(conn, scope)
    if unrestorable:
        raise PreflightError(f"{first_of(unrestorable)}: make it available on the VPS (an extension package) "
                             "or leave the dependent out too (excluded_tables)")
    streams = copy_engine == "stream"
    needed = dump_space_needed(catalog, client.major, rows_in_dump=not streams)
    purpose = "the schema dump and the large objects" if streams else dump_description(client.major)
    shortfall = space_shortfall(workdir.parent, needed, purpose)
    if shortfall:
        raise NotEnoughSpace(shortfall)
    return BackupPlan(target, catalog.server, target_server, catalog, scope, client, workdir, secrets_dir, jobs,
                      source_identity(source), adopt, restore_settings, copy_engine, range_bytes)


def plan_mode(plan: BackupPlan, vps: ConnectionInfo, requested: str, manifest_file: Path, adopted: bool,
              full_every: timedelta) -> None:
    """Decide full or incremental under the target's lock; an incremental run reads the current
    copy it builds on here (on the VPS: no egress)."""
    decision, manifest = choose_mode(requested, manifest_file, vps, plan.target, plan.copy_of, adopted, full_every)
    plan.mode, plan.mode_reason, plan.manifest_file = decision.mode, decision.reason, manifest_file
    if decision.mode == INCREMENTAL and manifest is not None:
        with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
            require_connection_slots(conn, "the VPS server", 2 * plan.jobs + 1,
                                     f"the incremental copy's {plan.jobs} workers hold 2 each (staging and the "
                                     "current copy), the run's lock session 1 more",
                                     "close sessions there, raise its max_connections, or lower parallel_jobs")
        plan.base = read_increment_base(vps, plan.target, manifest, plan.kept_schemas, plan.excluded_tables,
                                        read_chunks(chunk_record_path(manifest_file)))


def check_vps_databases(plan: BackupPlan, vps: ConnectionInfo) -> list[str]:
    """Refuse a target (or its staging, ``__previous``, ``__retired``) that is not the project's copy
    of this source; return those adopted instead. Run under the target's lock, so another run's
    databases are never judged half-made."""
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        return check_replaceable(conn, plan.target, plan.copy_of, plan.adopt)


def require_source_slots(conn: psycopg.Connection, jobs: int, copy_engine: str) -> None:
    """pg_dump's sessions and the run's snapshot session must fit on the source; the stream engine's
    ``jobs`` copy workers read after the dump, beside the snapshot session, so they fit where pg_dump did.

    The only check of the source's slots: the copy starts its ``jobs`` workers without asking again."""
    how = f"pg_dump --jobs={jobs} opens {jobs + 1}"
    if copy_engine == "stream":
        how += f" and the copy's workers {jobs} after it"
    require_connection_slots(conn, "the Supabase source", jobs + 2, f"{how}, the run's snapshot session 1 more",
                             "lower parallel_jobs (Supabase's free session pooler allows 15 clients)")


def require_vps_slots(conn: psycopg.Connection, client: PgClient, vps_server: ServerInfo, jobs: int,
                      copy_engine: str) -> None:
    """The restore's sessions and the run's lock session must fit on the VPS; with the stream engine, so
    must its ``jobs`` copy workers, which write between the restore's sections (see ``load``).

    The only check of the VPS's slots: the copy starts its ``jobs`` workers without asking again."""
    sessions, how = (jobs + 1, f"pg_restore --jobs={jobs} opens up to {jobs + 1}") \
        if client.major <= vps_server.major else (1, "psql restores the script in 1")
    if copy_engine == "stream":
        sessions, how = max(sessions, jobs), f"{how} and the copy's workers {jobs} between its sections"
    require_connection_slots(conn, "the VPS server", sessions + 1, f"{how}, the run's lock session 1 more",
                             "close sessions there, raise its max_connections, or lower parallel_jobs")


def require_superuser(vps_server: ServerInfo) -> None:
    """The VPS login must be a superuser: it recreates Supabase's roles and restores objects they own."""
    if not vps_server.superuser:
        raise NotSuperuser(
            f"VPS user {vps_server.current_user} must be a superuser on the VPS server: it recreates "
            "Supabase's roles and restores objects they own"
        )


def _same_server(a: ConnectionInfo, b: ConnectionInfo) -> bool:
    same_host = a.host == b.host or (is_local_host(a.host) and is_local_host(b.host))
    return same_host and (a.lookup_port or a.port) == (b.lookup_port or b.port)
