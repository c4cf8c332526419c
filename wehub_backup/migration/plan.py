"""Plan a migration: every check that can be made without changing anything, every problem collected."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wehub_backup.errors import MigrationRefused, PreflightError, VersionMismatch
from wehub_backup.migration.checks import (
    CatalogCopy,
    Relocation,
    managed_table_problems,
    plan_casts,
    plan_publications,
    plan_relocations,
    privilege_problems,
    source_problems,
    target_problems,
)
from wehub_backup.migration.managed_tables import CarriedTable, Recreated
from wehub_backup.migration.queries import KEPT_SCHEMAS
from wehub_backup.pg.catalog import DatabaseCatalog, ServerInfo, read_catalog
from wehub_backup.pg.clients import PgClient, choose_client
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.dump import DumpRequest, dump_space_needed
from wehub_backup.pg.names import parse_qualified, quote_pattern
from wehub_backup.preflight import connect_or_explain, money_settings
from wehub_backup.run.log import Log
from wehub_backup.run.workdir import space_shortfall
from wehub_backup.supabase.schemas import MANAGED_SCHEMAS
from wehub_backup.supabase.scope import LeftOut

# Stands in for the client of a plan that is refused anyway, so every other problem is still found.
_NO_CLIENT = PgClient(Path("/nonexistent"), 0, "none")


@dataclass
class MigrationPlan:
    """Everything decided before Supabase is touched."""

    source_database: str
    source: ServerInfo
    target_server: ServerInfo
    client: PgClient
    workdir: Path
    secrets_dir: Path  # the private password files of the run's child processes
    jobs: int
    app_schemas: list[str]
    excluded_tables: list[tuple[str, str]]
    overwrite: bool
    existing_schemas: list[str]
    relocations: list[Relocation] = field(default_factory=list)
    target_roles: frozenset[str] = frozenset()
    member_roles: frozenset[str] = frozenset()
    new_project: bool = False  # carry what a new project lacks: triggers, policies, buckets (and users)
    with_users: bool = False
    # Triggers and policies outside the app schemas created in the transaction: Supabase's own
    # that depend on app objects (their OIDs are the ones the prelude expects), and in a new
    # project the VPS copy's that Supabase lacks.
    recreated: list[Recreated] = field(default_factory=list)
    outside_oids: list[int] = field(default_factory=list)
    carried_tables: list[CarriedTable] = field(default_factory=list)
    hold_triggers: bool = False  # load carried rows with session_replication_role = replica
    casts: list[CatalogCopy] = field(default_factory=list)
    publications: list[CatalogCopy] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)
    owners_replaced: list[str] = field(default_factory=list)
    restore_settings: dict[str, str] = field(default_factory=dict)  # for the restore's session
    @property
    def dropped_schemas(self) -> list[str]:
        return [s for s in self.existing_schemas if s not in KEPT_SCHEMAS]

    def dump_request(self) -> DumpRequest:
        """The app schemas only; pg_dump --schema leaves large objects out (the plan lists them)."""
        args = [f"--schema={quote_pattern(s)}" for s in self.app_schemas]
        args += [f"--exclude-table={quote_pattern(s)}.{quote_pattern(t)}" for s, t in self.excluded_tables]
        return DumpRequest(self.workdir, self.secrets_dir, self.client, self.jobs, self.app_schemas,
                           self.excluded_tables, args, large_objects=False)


def plan_migration(
    source: ConnectionInfo,
    target: ConnectionInfo,
    workdir: Path,
    *,
    secrets_dir: Path,
    overwrite: bool,
    app_schemas: list[str],
    excluded_tables: list[str],
    extra_bindirs: list[Path],
    jobs: int,
    log: Log,
    new_project: bool = False,
    with_users: bool = False,
) -> MigrationPlan:
    """Check everything that can be checked without changing anything; collect every problem.

    Each problem is logged, and the run is refused with the first one (and a count), so an
    operator fixes them all in one go rather than one run at a time.
    """
    problems: list[str] = []
    with connect_or_explain(source, "the VPS database") as src, connect_or_explain(target, "Supabase") as tgt:
        for conn in (src, tgt):
            conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")
        catalog = read_catalog(src)
        target_catalog = read_catalog(tgt)
        schemas = choose_app_schemas(catalog, app_schemas)
        existing = [s for s in schemas if s in target_catalog.schemas]
        plan = MigrationPlan(
            source_database=source.dbname, source=catalog.server, target_server=target_catalog.server,
            client=_choose_client(catalog.server, target_catalog.server, extra_bindirs, problems),
            workdir=workdir, secrets_dir=secrets_dir, jobs=jobs, app_schemas=schemas,
            excluded_tables=[parse_qualified(t) for t in excluded_tables], overwrite=overwrite,
            existing_schemas=existing, new_project=new_project, with_users=with_users,
        )
        plan.target_roles = frozenset(r[0] for r in tgt.execute("SELECT rolname FROM pg_roles"))
        plan.member_roles = frozenset(r[0] for r in tgt.execute(
            "SELECT rolname FROM pg_roles WHERE pg_has_role(oid, 'MEMBER')"))
        problems += source_problems(src, plan, catalog)
        plan.relocations, relocation_problems = plan_relocations(src, catalog, target_catalog)
        problems += relocation_problems
        problems += privilege_problems(src, plan)
        problems += target_problems(tgt, src, plan)
        problems += managed_table_problems(src, tgt, plan, catalog, target_catalog)
        problems += plan_casts(src, plan) + plan_publications(src, tgt, plan)
        try:
            plan.restore_settings = money_settings(src, tgt, schemas, "Supabase")
        except PreflightError as error:
            problems.append(str(error))
    shortfall = space_shortfall(workdir.parent, dump_space_needed(catalog, plan.client.major) + catalog.table_bytes,
                                "the dump and the restore script")
    if shortfall:
        problems.append(shortfall)
    for problem in problems:
        log(f"preflight: {problem}")
    if problems:
        raise MigrationRefused(problems)
    return plan


def choose_app_schemas(catalog: DatabaseCatalog, requested: list[str]) -> list[str]:
    """The VPS schemas that hold the app: all but Supabase-managed and extension-made ones, or the configured list."""
    managed = set(MANAGED_SCHEMAS)
    extension_made = {schema for ext in catalog.extensions for schema in ext.member_schemas}
    if not requested:
        found = [s for s in catalog.schemas if s not in managed and s not in extension_made]
        if not found:
            raise MigrationRefused([f"the VPS database {catalog.server.database} holds no app schema to migrate"])
        return found
    problems = [f"schema {s} is managed by Supabase and is never migrated" for s in requested if s in managed]
    problems += [f"schema {s} does not exist in the VPS database" for s in requested
                 if s not in catalog.schemas and s not in managed]
    if problems:
        raise MigrationRefused(problems)
    return list(dict.fromkeys(requested))


def _choose_client(source: ServerInfo, target: ServerInfo, extra_bindirs: list[Path], problems: list[str]) -> PgClient:
    """pg_dump must be as new as the VPS server, and a dump of a newer server may not load into an older one."""
    if target.major < source.major:
        problems.append(f"the VPS runs PostgreSQL {source.major} but Supabase runs {target.major}: a dump of a newer "
                        "server may not load into an older one; upgrade the Supabase project first")
    try:
        return choose_client(max(source.major, target.major), extra_bindirs, purpose="migrate")
    except VersionMismatch as error:
        problems.append(str(error))
        return _NO_CLIENT
