"""The migration, VPS -> Supabase, as plain functions: plan, dump, restore in one transaction, verify.

On Supabase the login role ``postgres`` is not a superuser, and the project's managed schemas
(auth, storage, ...), roles, grants and extensions must come out untouched. So only the app's
schemas are copied, without owners; extensions are never created or dropped (references to
functions of extensions that live in another schema on Supabase are rewritten); privileges are
kept for roles Supabase has; and everything a non-superuser cannot do is found before anything
changes. Emptying the app schemas and restoring them run in one transaction: any error leaves
Supabase exactly as it was.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from wehub_backup import pgtools
from wehub_backup.backup import DumpResult, Log, VerificationFailed, dump_space_needed
from wehub_backup.catalog import DatabaseCatalog, ServerInfo, read_catalog
from wehub_backup.fingerprint import DatabaseFingerprint, compare_fingerprints, fingerprint_database
from wehub_backup.pgtools import PgClient, ToolRun
from wehub_backup.preflight import PreflightError, connect_or_explain, first_of, money_settings
from wehub_backup.runlog import space_shortfall
from wehub_backup.settings import ConnectionInfo
from wehub_backup.supabase_compat import MANAGED_SCHEMAS, TOC_ENTRY, LeftOut, parse_qualified, quote_pattern
from wehub_backup.wire import counted_connection

# Emptied and refilled, never dropped: Supabase keeps its owner, grants and default privileges.
KEPT_SCHEMAS = ("public",)
# A DROP waiting this long for the application's locks gives up (and rolls everything back).
LOCK_TIMEOUT = "60s"
_ROLE = r'(?P<role>PUBLIC|"(?:[^"]|"")+"|[^\s";]+)'
_GRANTEE = re.compile(r" (?:TO|FROM) " + _ROLE + r"(?: WITH GRANT OPTION)?;$")
_DEFAULT_PRIVILEGES_OWNER = re.compile(r'^ALTER DEFAULT PRIVILEGES FOR ROLE (?P<role>"(?:[^"]|"")+"|[^\s";]+) ')
_SESSION_AUTHORIZATION = re.compile(r"^(?:SET|RESET) SESSION AUTHORIZATION\b")
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")
# Stands in for the client of a plan that is refused anyway, so every other problem is still found.
_NO_CLIENT = PgClient(Path("/nonexistent"), 0, "none")


class MigrationRefused(PreflightError):
    """The preflight found problems; nothing was changed. ``problems`` names every one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"migration refused, nothing was changed: {first_of(problems)}")
        self.problems = problems


@dataclass(frozen=True)
class Relocation:
    """An extension that lives in another schema on Supabase than on the VPS (uuid-ossp: public -> extensions)."""

    extension: str
    source_schema: str
    target_schema: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class OutsideTrigger:
    """A trigger on a table Supabase manages (auth.users, say) that calls an app function.

    Replacing the function drops the trigger with it, so it is recreated after the restore.
    """

    name: str
    statements: str


@dataclass
class MigrationPlan:
    """Everything decided before Supabase is touched."""

    source_database: str
    source: ServerInfo
    target_server: ServerInfo
    client: PgClient
    workdir: Path
    jobs: int
    app_schemas: list[str]
    excluded_tables: list[tuple[str, str]]
    overwrite: bool
    existing_schemas: list[str]
    relocations: list[Relocation] = field(default_factory=list)
    target_roles: frozenset[str] = frozenset()
    member_roles: frozenset[str] = frozenset()
    outside_triggers: list[OutsideTrigger] = field(default_factory=list)
    outside_trigger_oids: list[int] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)
    owners_replaced: list[str] = field(default_factory=list)
    restore_settings: dict[str, str] = field(default_factory=dict)  # for the restore's session
    copies_large_objects = False  # pg_dump --schema leaves them out; the plan lists them

    @property
    def kept_schemas(self) -> list[str]:
        """The schemas dumped and verified (``dump_source`` reads this name)."""
        return self.app_schemas

    @property
    def dropped_schemas(self) -> list[str]:
        return [s for s in self.existing_schemas if s not in KEPT_SCHEMAS]

    def pg_dump_arguments(self) -> list[str]:
        args = [f"--schema={quote_pattern(s)}" for s in self.app_schemas]
        return args + [f"--exclude-table={quote_pattern(s)}.{quote_pattern(t)}" for s, t in self.excluded_tables]


@dataclass
class MigrationRestore:
    seconds: float
    bytes_sent: int
    psql: ToolRun
    rewritten_references: int
    privileges_left_out: list[str]


@dataclass
class MigrationVerification:
    seconds: float
    tables: int
    rows: int
    sequences_checked: int
    fingerprint: DatabaseFingerprint = field(repr=False, default_factory=DatabaseFingerprint)


# --- plan ------------------------------------------------------------------------------------


def plan_migration(
    source: ConnectionInfo,
    target: ConnectionInfo,
    workdir: Path,
    *,
    overwrite: bool,
    app_schemas: list[str],
    excluded_tables: list[str],
    extra_bindirs: list[Path],
    jobs: int,
    log: Log,
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
            workdir=workdir, jobs=jobs, app_schemas=schemas,
            excluded_tables=[parse_qualified(t) for t in excluded_tables], overwrite=overwrite,
            existing_schemas=existing,
        )
        plan.target_roles = frozenset(r[0] for r in tgt.execute("SELECT rolname FROM pg_roles"))
        plan.member_roles = frozenset(r[0] for r in tgt.execute(
            "SELECT rolname FROM pg_roles WHERE pg_has_role(oid, 'MEMBER')"))
        problems += _source_problems(src, plan, catalog)
        plan.relocations, relocation_problems = _plan_relocations(src, catalog, target_catalog)
        problems += relocation_problems
        problems += _privilege_problems(src, plan)
        problems += _target_problems(tgt, src, plan)
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
        return pgtools.choose_client(max(source.major, target.major), extra_bindirs, purpose="migrate")
    except pgtools.VersionMismatch as error:
        problems.append(str(error))
        return _NO_CLIENT


def _app_scope(schemas: list[str]) -> dict[str, sql.Composable]:
    return {"schemas": sql.Literal(schemas), "kept": sql.Literal(list(KEPT_SCHEMAS))}


def _rows(conn: psycopg.Connection, query: str, **values: object) -> list[tuple]:
    """Run a catalog query whose ``{name}`` placeholders take literal values."""
    composed = sql.SQL(query).format(**{k: v if isinstance(v, sql.Composable) else sql.Literal(v) for k, v in values.items()})
    return conn.execute(composed).fetchall()


# Non-extension objects of the app schemas, as a CTE other queries build on.
_APP_OBJECTS = """app AS (SELECT oid FROM pg_namespace WHERE nspname = ANY({schemas}::name[])),
  member AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e')"""

_UNSUPPORTED = "WITH " + _APP_OBJECTS + """
SELECT format('function %s is written in %s, which only a superuser can create', p.oid::regprocedure, l.lanname)
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
  WHERE p.pronamespace IN (SELECT oid FROM app) AND NOT l.lanpltrusted
    AND (p.tableoid, p.oid) NOT IN (SELECT * FROM member)
UNION ALL
SELECT format('foreign table %s needs foreign server %I, which a migration does not create', c.oid::regclass, s.srvname)
  FROM pg_foreign_table f JOIN pg_class c ON c.oid = f.ftrelid JOIN pg_foreign_server s ON s.oid = f.ftserver
  WHERE c.relnamespace IN (SELECT oid FROM app) AND (c.tableoid, c.oid) NOT IN (SELECT * FROM member)
ORDER BY 1"""

_NOT_MIGRATED = "WITH " + _APP_OBJECTS + """
SELECT 'publication table', format('%I: %s', p.pubname, r.prrelid::regclass),
       'publications are not migrated; add the table to a Supabase publication if it needs one'
  FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid JOIN pg_class c ON c.oid = r.prrelid
  WHERE c.relnamespace IN (SELECT oid FROM app)
UNION ALL
SELECT 'cast', format('%s AS %s', format_type(k.castsource, NULL), format_type(k.casttarget, NULL)),
       'casts are not part of a schema; create it on Supabase if it is needed'
  FROM pg_cast k JOIN pg_proc p ON p.oid = k.castfunc
  WHERE p.pronamespace IN (SELECT oid FROM app) AND (k.tableoid, k.oid) NOT IN (SELECT * FROM member)
UNION ALL
SELECT 'large objects', count(*)::text, 'large objects are not part of a schema'
  FROM pg_largeobject_metadata HAVING count(*) > 0"""

_OWNERS = "WITH " + _APP_OBJECTS + """
SELECT DISTINCT pg_get_userbyid(o.owner) FROM (
  SELECT tableoid, oid, relowner AS owner FROM pg_class WHERE relnamespace IN (SELECT oid FROM app)
  UNION ALL SELECT tableoid, oid, proowner FROM pg_proc WHERE pronamespace IN (SELECT oid FROM app)
  UNION ALL SELECT tableoid, oid, typowner FROM pg_type WHERE typnamespace IN (SELECT oid FROM app)
  UNION ALL SELECT tableoid, oid, nspowner FROM pg_namespace
    WHERE oid IN (SELECT oid FROM app) AND nspname <> ALL({kept}::name[])
) o WHERE (o.tableoid, o.oid) NOT IN (SELECT * FROM member) ORDER BY 1"""


def _source_problems(src: psycopg.Connection, plan: MigrationPlan, catalog: DatabaseCatalog) -> list[str]:
    """What the VPS database holds that Supabase cannot take, and what is reported as not migrated."""
    problems = [f"table {s}.{t} is not readable by VPS user {catalog.server.current_user}"
                for s, t in catalog.unreadable_relations if s in plan.app_schemas]
    problems += [row[0] for row in _rows(src, _UNSUPPORTED, **_app_scope(plan.app_schemas))]
    plan.left_out += [LeftOut("event trigger", t.name, "a non-superuser cannot create event triggers on Supabase; "
                                                       "recreate it there if it is still needed")
                      for t in catalog.event_triggers]
    plan.left_out += [LeftOut(*row) for row in _rows(src, _NOT_MIGRATED, **_app_scope(plan.app_schemas))]
    plan.owners_replaced = [row[0] for row in _rows(src, _OWNERS, **_app_scope(plan.app_schemas))
                            if row[0] != plan.target_server.current_user]
    return problems


_NAME_COLLISIONS = """
SELECT format('%s %I.%I', x.kind, n.nspname, x.name) FROM (
  SELECT tableoid, oid, relnamespace AS ns, relname AS name, 'relation' AS kind FROM pg_class
  UNION ALL SELECT tableoid, oid, pronamespace, proname, 'function' FROM pg_proc
  UNION ALL SELECT tableoid, oid, typnamespace, typname, 'type' FROM pg_type t
    WHERE t.typrelid = 0 AND NOT EXISTS (SELECT 1 FROM pg_type a WHERE a.typarray = t.oid)
) x JOIN pg_namespace n ON n.oid = x.ns
WHERE (n.nspname::text, x.name::text) IN (SELECT * FROM unnest({schemas}::text[], {names}::text[]))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = x.tableoid AND d.objid = x.oid AND d.deptype = 'e')
ORDER BY 1"""


def _plan_relocations(src: psycopg.Connection, catalog: DatabaseCatalog,
                      target_catalog: DatabaseCatalog) -> tuple[list[Relocation], list[str]]:
    """Extensions the app uses must be enabled on Supabase; those in another schema there get references rewritten.

    A reference is rewritten by its qualified name, so an app object named like a member of
    a relocated extension in the same schema would be rewritten too: that is refused.
    """
    installed = {ext.name: ext for ext in target_catalog.extensions}
    problems, relocations = [], []
    for ext in catalog.extensions:
        there = installed.get(ext.name)
        if there is None:
            problems.append(f"extension {ext.name} is installed in the VPS database but not on Supabase: "
                            "enable it in the Supabase dashboard (Database > Extensions)")
        elif there.schema != ext.schema:
            members = tuple(sorted({name for schema, name in ext.members if schema == ext.schema}))
            relocations.append(Relocation(ext.name, ext.schema, there.schema, members))
    pairs = [(r.source_schema, name) for r in relocations for name in r.members]
    if pairs:
        collisions = _rows(src, _NAME_COLLISIONS, schemas=[p[0] for p in pairs], names=[p[1] for p in pairs])
        problems += [f"{row[0]} has the name of a function of an extension that lives in another schema on "
                     "Supabase, so references to it cannot be told apart: rename it" for row in collisions]
    return relocations, problems


_GRANTS = "WITH " + _APP_OBJECTS + """,
acls(object, acl) AS (
  SELECT format('%s %s', CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
                WHEN 'm' THEN 'materialized view' ELSE 'table' END, c.oid::regclass), c.relacl
    FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM app) AND c.relacl IS NOT NULL
      AND (c.tableoid, c.oid) NOT IN (SELECT * FROM member)
  UNION ALL SELECT format('column %s.%I', c.oid::regclass, a.attname), a.attacl
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    WHERE c.relnamespace IN (SELECT oid FROM app) AND a.attacl IS NOT NULL
  UNION ALL SELECT format('function %s', p.oid::regprocedure), p.proacl FROM pg_proc p
    WHERE p.pronamespace IN (SELECT oid FROM app) AND p.proacl IS NOT NULL
      AND (p.tableoid, p.oid) NOT IN (SELECT * FROM member)
  UNION ALL SELECT format('type %s', t.oid::regtype), t.typacl FROM pg_type t
    WHERE t.typnamespace IN (SELECT oid FROM app) AND t.typacl IS NOT NULL
      AND (t.tableoid, t.oid) NOT IN (SELECT * FROM member)
  UNION ALL SELECT format('schema %I', n.nspname), n.nspacl FROM pg_namespace n
    WHERE n.oid IN (SELECT oid FROM app) AND n.nspname <> ALL({kept}::name[]) AND n.nspacl IS NOT NULL
  UNION ALL SELECT format('default privileges of %I in schema %I', pg_get_userbyid(d.defaclrole), n.nspname),
                   d.defaclacl
    FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace WHERE n.oid IN (SELECT oid FROM app)
)
SELECT DISTINCT object, pg_get_userbyid(x.grantee) FROM acls, aclexplode(acl) x WHERE x.grantee <> 0 ORDER BY 1, 2"""

_DEFAULT_PRIVILEGE_OWNERS = """
SELECT DISTINCT n.nspname, pg_get_userbyid(d.defaclrole) FROM pg_default_acl d
  JOIN pg_namespace n ON n.oid = d.defaclnamespace WHERE n.nspname = ANY({schemas}::name[]) ORDER BY 1, 2"""

_POLICY_ROLES = """
SELECT format('policy %I on %s', p.polname, p.polrelid::regclass), pg_get_userbyid(r.role)
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  CROSS JOIN LATERAL unnest(p.polroles) AS r(role)
  WHERE n.nspname = ANY({schemas}::name[]) AND r.role <> 0 ORDER BY 1, 2"""


def _privilege_problems(src: psycopg.Connection, plan: MigrationPlan) -> list[str]:
    """Roles the app's privileges and policies name must exist on Supabase.

    A grant to a role Supabase does not have grants nothing there, so it is left out (and
    reported); a policy cannot lose a role without changing who it applies to, so it refuses.
    """
    scope = _app_scope(plan.app_schemas)
    for obj, role in _rows(src, _GRANTS, **scope):
        if role not in plan.target_roles:
            plan.left_out.append(LeftOut("privilege", f"{obj} to {role}", "role does not exist on Supabase"))
    for schema, role in _rows(src, _DEFAULT_PRIVILEGE_OWNERS, **scope):
        if role not in plan.member_roles:
            plan.left_out.append(LeftOut("default privileges", f"of {role} in schema {schema}",
                                         f"{plan.target_server.current_user} is not a member of {role} on Supabase"))
    return [f"{policy} applies to role {role}, which does not exist on Supabase: create the role there first"
            for policy, role in _rows(src, _POLICY_ROLES, **scope) if role not in plan.target_roles]


# Top-level objects of the given schemas: what an overwrite drops. Extension members stay;
# objects owned by another (an identity column's sequence) go with their owner.
_SCHEMA_OBJECTS = """
SELECT n.nspname AS schema, o.type, o.identity,
       coalesce((SELECT relowner FROM pg_class WHERE d.classid = 'pg_class'::regclass AND oid = d.objid),
                (SELECT proowner FROM pg_proc WHERE d.classid = 'pg_proc'::regclass AND oid = d.objid),
                (SELECT typowner FROM pg_type WHERE d.classid = 'pg_type'::regclass AND oid = d.objid)) AS owner
  FROM pg_depend d JOIN pg_namespace n ON n.oid = d.refobjid
  CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, 0) o
  WHERE d.refclassid = 'pg_namespace'::regclass AND d.deptype = 'n' AND n.nspname = ANY({schemas}::name[])
    AND d.classid <> 'pg_extension'::regclass
    AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.classid AND e.objid = d.objid
                    AND e.deptype IN ('e', 'a', 'i'))"""

# Objects outside the replaced schemas that depend on objects inside them: dropping the
# inside ones would silently drop these (a DROP ... CASCADE checks no ownership of dependents).
_OUTSIDE_DEPENDENTS = """
WITH replaced AS (SELECT oid, nspname FROM pg_namespace WHERE nspname = ANY({schemas}::name[])),
candidates(classid, objid) AS (
  SELECT 'pg_namespace'::regclass, oid FROM replaced WHERE nspname <> ALL({kept}::name[])
  UNION ALL SELECT 'pg_class'::regclass, oid FROM pg_class WHERE relnamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_proc'::regclass, oid FROM pg_proc WHERE pronamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_type'::regclass, oid FROM pg_type WHERE typnamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_constraint'::regclass, oid FROM pg_constraint WHERE connamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_operator'::regclass, oid FROM pg_operator WHERE oprnamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_collation'::regclass, oid FROM pg_collation WHERE collnamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_ts_config'::regclass, oid FROM pg_ts_config WHERE cfgnamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_ts_dict'::regclass, oid FROM pg_ts_dict WHERE dictnamespace IN (SELECT oid FROM replaced)
),
inside AS (
  SELECT * FROM candidates c WHERE NOT EXISTS (
    SELECT 1 FROM pg_depend e WHERE e.classid = c.classid AND e.objid = c.objid AND e.deptype = 'e')
),
dependents AS (
  SELECT DISTINCT d.classid, d.objid, d.refclassid, d.refobjid,
    CASE d.classid
      WHEN 'pg_class'::regclass THEN (SELECT relnamespace FROM pg_class WHERE oid = d.objid)
      WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = d.objid)
      WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = d.objid)
      WHEN 'pg_constraint'::regclass THEN (SELECT coalesce(c.relnamespace, k.connamespace) FROM pg_constraint k
                                           LEFT JOIN pg_class c ON c.oid = k.conrelid WHERE k.oid = d.objid)
      WHEN 'pg_rewrite'::regclass THEN (SELECT c.relnamespace FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
                                        WHERE r.oid = d.objid)
      WHEN 'pg_trigger'::regclass THEN (SELECT c.relnamespace FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                                        WHERE t.oid = d.objid)
      WHEN 'pg_policy'::regclass THEN (SELECT c.relnamespace FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
                                       WHERE p.oid = d.objid)
      WHEN 'pg_attrdef'::regclass THEN (SELECT c.relnamespace FROM pg_attrdef a JOIN pg_class c ON c.oid = a.adrelid
                                        WHERE a.oid = d.objid)
      ELSE (SELECT n.oid FROM pg_namespace n WHERE n.nspname = (pg_identify_object(d.classid, d.objid, 0)).schema)
    END AS schema_oid
  FROM pg_depend d JOIN inside i ON i.classid = d.refclassid AND i.objid = d.refobjid
  WHERE d.deptype IN ('n', 'a') AND d.classid <> 'pg_default_acl'::regclass
)
SELECT CASE WHEN classid = 'pg_trigger'::regclass THEN 'trigger'
            WHEN classid IN ('pg_publication_rel'::regclass, 'pg_publication_namespace'::regclass) THEN 'publication'
            ELSE 'other' END AS kind,
       objid, pg_describe_object(classid, objid, 0) AS dependent,
       pg_describe_object(refclassid, refobjid, 0) AS referenced,
       CASE WHEN refclassid = 'pg_proc'::regclass THEN (pg_identify_object(refclassid, refobjid, 0)).identity END
         AS function_identity
  FROM dependents WHERE schema_oid IS NULL OR schema_oid NOT IN (SELECT oid FROM replaced)
  ORDER BY 3, 4"""

_TRIGGER_DEFINITIONS = """
SELECT t.oid, pg_describe_object('pg_trigger'::regclass, t.oid, 0), pg_get_triggerdef(t.oid), t.tgenabled,
       format('%s %I', t.tgrelid::regclass, t.tgname), has_table_privilege(t.tgrelid, 'TRIGGER')
  FROM pg_trigger t WHERE t.oid = ANY({oids}::oid[]) ORDER BY 2"""
_ENABLE_STATES = {"D": "DISABLE TRIGGER", "R": "ENABLE REPLICA TRIGGER", "A": "ENABLE ALWAYS TRIGGER"}


def _target_problems(tgt: psycopg.Connection, src: psycopg.Connection, plan: MigrationPlan) -> list[str]:
    """Whether the app schemas on Supabase may be replaced, and what outside them depends on them."""
    if not plan.existing_schemas:
        return []
    user = plan.target_server.current_user
    problems = []
    objects = _rows(tgt, _SCHEMA_OBJECTS + " ORDER BY 1, 3", schemas=plan.existing_schemas)
    for schema in dict.fromkeys(row[0] for row in objects) if not plan.overwrite else ():
        found = [f"{kind} {identity}" for s, kind, identity, _ in objects if s == schema]
        problems.append(f"schema {schema} on Supabase already holds {len(found)} object(s) (first: {found[0]}); "
                        "set overwrite: true (wehub-backup migrate --overwrite) to replace them")
    owned_by_others = _rows(tgt, """SELECT s.kind, s.identity, pg_get_userbyid(s.owner) FROM (
        SELECT 'schema' AS kind, quote_ident(nspname) AS identity, nspowner AS owner FROM pg_namespace
          WHERE nspname = ANY({dropped}::name[])
        UNION ALL SELECT o.type, o.identity, o.owner FROM (""" + _SCHEMA_OBJECTS + """) o
          WHERE o.schema = ANY({kept}::name[])) s
        WHERE s.owner IS NOT NULL AND NOT pg_has_role(s.owner, 'MEMBER') ORDER BY 1, 2""",
                            dropped=plan.dropped_schemas, schemas=plan.existing_schemas, kept=list(KEPT_SCHEMAS))
    problems += [f"{kind} {identity} on Supabase is owned by {owner}, so {user} cannot replace it"
                 for kind, identity, owner in owned_by_others]
    dependents = _rows(tgt, _OUTSIDE_DEPENDENTS, **_app_scope(plan.existing_schemas))
    for kind, _, dependent, referenced, _ in dependents:
        if kind == "publication":
            plan.left_out.append(LeftOut("publication table", dependent,
                                         "removed from the publication with the old table; add the new one back"))
        elif kind == "other":
            problems.append(f"{dependent} on Supabase depends on {referenced}, which the migration replaces; "
                            "drop it first (and recreate it afterwards)")
    triggers = [row for row in dependents if row[0] == "trigger"]
    problems += _plan_outside_triggers(tgt, src, plan, triggers)
    return problems


def _plan_outside_triggers(tgt: psycopg.Connection, src: psycopg.Connection, plan: MigrationPlan,
                           triggers: list[tuple]) -> list[str]:
    """Triggers on Supabase's tables that call app functions are recreated; the functions must exist in the VPS copy."""
    problems = []
    for _, _, dependent, referenced, function in triggers:
        if function is None or src.execute("SELECT to_regprocedure(%s)", (function,)).fetchone()[0] is None:
            problems.append(f"{dependent} on Supabase calls {referenced}, which the VPS database does not have")
    oids = sorted({row[1] for row in triggers})
    for oid, name, definition, enabled, qualified, may_create in _rows(tgt, _TRIGGER_DEFINITIONS, oids=oids) if oids else []:
        if not may_create:
            problems.append(f"{name} must be recreated after the restore, but "
                            f"{plan.target_server.current_user} lacks the TRIGGER privilege on its table")
        table, trigger = qualified.rsplit(" ", 1)
        state = f"\nALTER TABLE {table} {_ENABLE_STATES[enabled]} {trigger};" if enabled in _ENABLE_STATES else ""
        plan.outside_triggers.append(OutsideTrigger(name, f"{definition};{state}"))
        plan.outside_trigger_oids.append(oid)
    return problems


# --- restore ---------------------------------------------------------------------------------


def restore_into_supabase(plan: MigrationPlan, dump: DumpResult, target: ConnectionInfo, log: Log,
                          *, low_priority: bool = True) -> MigrationRestore:
    """Empty the app schemas and restore them in one psql transaction, through the byte-counting relay.

    ``ON_ERROR_STOP`` makes the first error end psql, which rolls the transaction back: no
    error is ever 'ignored', and Supabase is either unchanged or fully migrated.
    """
    started = time.monotonic()
    scripts, rewritten, privileges_left_out = write_restore_scripts(plan, dump)
    for line in privileges_left_out:
        log(f"left out (role missing on Supabase or not ours to use): {line}")
    argv = [plan.client.program("psql"), "--no-psqlrc", "--single-transaction", "--set=ON_ERROR_STOP=1",
            "--quiet", "--no-password", *(f"--file={script}" for script in scripts)]
    with counted_connection(target) as (relayed, counters), \
            relayed.tool_environment(plan.workdir / "target.pgpass") as env:
        try:
            run = pgtools.run_tool(argv, env, on_line=_server_messages(log), low_priority=low_priority)
        except pgtools.ToolError as error:
            rolled_back = "ERROR:" in str(error)
            raise pgtools.ToolError(f"{error}" + ("; the transaction was rolled back, Supabase is unchanged"
                                                  if rolled_back else "")) from None
        sent = counters.sent_to_server
    return MigrationRestore(time.monotonic() - started, sent, run, rewritten, privileges_left_out)


def _server_messages(log: Log) -> Callable[[str], None]:
    """Pass on what the server said (warnings such as 'no privileges were granted', and errors)."""

    def forward(line: str) -> None:
        if "WARNING:" in line or "ERROR:" in line:
            log(line)

    return forward


def write_restore_scripts(plan: MigrationPlan, dump: DumpResult) -> tuple[list[Path], int, list[str]]:
    """The scripts psql runs, in order; with the count of rewritten references and the privileges left out.

    pg_restore writes the schema before and after the data, and the privileges, as SQL.
    Only the schema and privilege scripts are rewritten; the data script is never touched
    beyond its header.
    """
    workdir = plan.workdir
    listing_path = workdir / "archive.listing"
    env = dict(os.environ)
    restore = [plan.client.program("pg_restore"), "--no-owner", "--no-tablespaces", "--no-security-labels"]
    listing = pgtools.archive_listing(plan.client, dump.archive, env, listing_path)
    main_list, privileges_list = split_listing(listing, KEPT_SCHEMAS)
    (workdir / "main.list").write_text(main_list, encoding="utf-8")
    (workdir / "privileges.list").write_text(privileges_list, encoding="utf-8")
    parts = {
        "pre-data.sql": ["--section=pre-data", f"--use-list={workdir / 'main.list'}"],
        "data.sql": ["--section=data", f"--use-list={workdir / 'main.list'}"],
        "post-data.sql": ["--section=post-data", f"--use-list={workdir / 'main.list'}"],
        "privileges.sql": [f"--use-list={workdir / 'privileges.list'}"],
    }
    for name, args in parts.items():
        pgtools.run_tool([*restore, *args, f"--file={workdir / name}", str(dump.archive)], env)
        drop_unknown_settings(workdir / name, plan.target_server.major)
    rewrite = relocation_rewriter(plan.relocations)
    rewritten = sum(_rewrite_file(workdir / name, rewrite) for name in ("pre-data.sql", "post-data.sql"))
    privileges, left_out = filter_privileges(_read(workdir / "privileges.sql"), plan.target_roles, plan.member_roles)
    privileges, count = rewrite(privileges)
    _write(workdir / "privileges.sql", privileges)
    scripts = [_write(workdir / "prelude.sql", prelude_sql(plan)), workdir / "pre-data.sql", workdir / "data.sql",
               workdir / "post-data.sql", _write(workdir / "reset.sql", reset_privileges_sql(plan)),
               workdir / "privileges.sql"]
    if plan.outside_triggers:
        scripts.append(_write(workdir / "outside.sql", "\n".join(t.statements for t in plan.outside_triggers) + "\n"))
    return scripts, rewritten + count, left_out


def split_listing(listing: str, kept_schemas: tuple[str, ...]) -> tuple[str, str]:
    """Two restore lists from pg_restore's listing: everything but privileges, and privileges only.

    A kept schema's own entries (its CREATE SCHEMA, owner, grants and comment) are in neither:
    Supabase's definition of ``public`` stays.
    """
    kept_prefixes = tuple(f"{desc} {form} " for schema in kept_schemas for form in _name_forms(schema)
                          for desc in ("SCHEMA -", "COMMENT - SCHEMA", "ACL - SCHEMA"))
    main, privileges = [], []
    for line in listing.splitlines():
        match = TOC_ENTRY.match(line)
        if not match:
            main.append(line)
            privileges.append(line)
            continue
        rest = match["rest"]
        is_kept_schema = rest.startswith(kept_prefixes)
        is_privilege = rest.startswith(("ACL ", "DEFAULT ACL "))
        main.append(line if not (is_kept_schema or is_privilege) else ";" + line)
        privileges.append(line if is_privilege and not is_kept_schema else ";" + line)
    return "\n".join(main) + "\n", "\n".join(privileges) + "\n"


def drop_unknown_settings(script: Path, server_major: int) -> None:
    """Comment out header settings the target server is too old for, in place (the data script can be large).

    ``SET transaction_timeout`` from pg_restore 17 fails on PostgreSQL 15; its three bytes
    ``SET`` become ``-- `` so nothing else of the file moves. The scripts are complete files
    rather than a pipe into psql: a pipe cut short ends a ``COPY`` early without an error,
    and psql would then go on to commit a partial table.
    """
    with open(script, "r+b") as handle:
        head = handle.read(8192)
        for setting in pgtools.settings_unknown_to(server_major):
            at = head.find(b"\nSET " + setting + b" ")
            if at >= 0:
                handle.seek(at + 1)
                handle.write(b"-- ")


def relocation_rewriter(relocations: list[Relocation]) -> Callable[[str], tuple[str, int]]:
    """A function that rewrites ``public.uuid_generate_v4`` to ``"extensions".uuid_generate_v4`` and the like."""
    rules = []
    for relocation in relocations:
        if not relocation.members:
            continue
        names = sorted({re.escape(form) for member in relocation.members for form in _name_forms(member)},
                       key=len, reverse=True)
        schemas = "|".join(re.escape(form) for form in _name_forms(relocation.source_schema))
        pattern = re.compile(rf'(?<![\w$."])(?:{schemas})\.(?=(?:{"|".join(names)})(?![\w$]))')
        rules.append((pattern, quote_pattern(relocation.target_schema) + "."))

    def rewrite(text: str) -> tuple[str, int]:
        total = 0
        for pattern, replacement in rules:
            text, count = pattern.subn(replacement, text)
            total += count
        return text, total

    return rewrite


def filter_privileges(script: str, target_roles: frozenset[str], member_roles: frozenset[str]) -> tuple[str, list[str]]:
    """Keep the GRANT/REVOKE lines Supabase can run; return the script and the lines left out.

    A grant to a role Supabase lacks would fail; default privileges of a role the login is
    not a member of cannot be set. Grants made by another grantor run as the login (who owns
    every migrated object), so the ``SET SESSION AUTHORIZATION`` around them goes.
    """
    kept, left_out = [], []
    for line in script.splitlines(keepends=True):
        statement = line.rstrip("\n")
        if _SESSION_AUTHORIZATION.match(statement):
            continue
        owner = _DEFAULT_PRIVILEGES_OWNER.match(statement)
        grantee = _GRANTEE.search(statement) if statement.startswith(("GRANT ", "REVOKE ", "ALTER DEFAULT ")) else None
        if (owner and _unquote(owner["role"]) not in member_roles) or (
                grantee and grantee["role"] != "PUBLIC" and _unquote(grantee["role"]) not in target_roles):
            left_out.append(statement)
            continue
        kept.append(line)
    return "".join(kept), left_out


def prelude_sql(plan: MigrationPlan) -> str:
    """The transaction's first statements: re-check the preflight's findings, then empty the app schemas.

    The checks repeat inside the transaction, so a change on Supabase since the preflight
    (a new trigger on auth.users, a table in an empty schema) aborts instead of being lost.
    """
    scope = {**_app_scope(plan.existing_schemas), "expected": sql.Literal(plan.outside_trigger_oids)}
    outside = sql.SQL(_OUTSIDE_DEPENDENTS).format(**scope)
    objects = sql.SQL(_SCHEMA_OBJECTS).format(**scope)
    statements = [
        sql.SQL("SET statement_timeout = 0"), sql.SQL("SET lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)),
        sql.SQL("SET client_min_messages = warning"), sql.SQL("SELECT pg_catalog.set_config('search_path', '', false)"),
        *(sql.SQL("SELECT pg_catalog.set_config({}, {}, false)").format(sql.Literal(name), sql.Literal(value))
          for name, value in plan.restore_settings.items()),
        sql.SQL("""DO $wehub$ DECLARE blocker text; BEGIN
  SELECT q.dependent || ' depends on ' || q.referenced INTO blocker FROM ({outside}) q
    WHERE q.kind = 'other' OR (q.kind = 'trigger' AND NOT q.objid::bigint = ANY({expected}::bigint[])) LIMIT 1;
  IF blocker IS NOT NULL THEN
    RAISE EXCEPTION 'Supabase changed since the preflight: % (nothing was changed; run the migration again)', blocker;
  END IF;
END $wehub$""").format(outside=outside, **scope),
    ]
    if not plan.overwrite:
        statements.append(sql.SQL("""DO $wehub$ DECLARE found text; BEGIN
  SELECT o.type || ' ' || o.identity INTO found FROM ({objects}) o LIMIT 1;
  IF found IS NOT NULL THEN
    RAISE EXCEPTION '% appeared on Supabase since the preflight; nothing was changed (overwrite is off)', found;
  END IF;
END $wehub$""").format(objects=objects))
    statements += [sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(s)) for s in plan.dropped_schemas]
    return ";\n".join(s.as_string() for s in statements) + ";\n" + empty_schemas_sql(
        [s for s in plan.existing_schemas if s in KEPT_SCHEMAS])


def empty_schemas_sql(schemas: list[str]) -> str:
    """Drop every object of the schemas except extension members, keeping the schemas themselves."""
    return sql.SQL("""DO $wehub$ DECLARE statement text; BEGIN
  FOREACH statement IN ARRAY ARRAY(
    SELECT format('DROP %s IF EXISTS %s CASCADE',
                  CASE o.type WHEN 'statistics object' THEN 'STATISTICS' ELSE upper(o.type) END, o.identity)
      FROM ({objects}) o)
  LOOP EXECUTE statement; END LOOP;
END $wehub$;
""").format(objects=sql.SQL(_SCHEMA_OBJECTS).format(schemas=sql.Literal(schemas))).as_string()


_RESET_PRIVILEGES = """DO $wehub$ DECLARE statement text; BEGIN
  FOREACH statement IN ARRAY ARRAY(
    SELECT DISTINCT format('REVOKE ALL ON %s %s FROM %s', o.kind, o.name,
                           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
    FROM (
      SELECT c.tableoid, c.oid, CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
             c.oid::regclass::text AS name, c.relacl AS acl,
             acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner) AS initial
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY({schemas}::name[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relacl IS NOT NULL
      UNION ALL SELECT p.tableoid, p.oid, 'ROUTINE', p.oid::regprocedure::text, p.proacl, acldefault('f', p.proowner)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY({schemas}::name[]) AND p.proacl IS NOT NULL
      UNION ALL SELECT t.tableoid, t.oid, 'TYPE', format_type(t.oid, NULL), t.typacl, acldefault('T', t.typowner)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = ANY({schemas}::name[]) AND t.typacl IS NOT NULL
      UNION ALL SELECT n.tableoid, n.oid, 'SCHEMA', quote_ident(n.nspname), n.nspacl, acldefault('n', n.nspowner)
        FROM pg_namespace n
        WHERE n.nspname = ANY({schemas}::name[]) AND n.nspname <> ALL({kept}::name[]) AND n.nspacl IS NOT NULL
    ) o CROSS JOIN LATERAL aclexplode(o.acl) a
    WHERE a.grantee NOT IN (SELECT i.grantee FROM aclexplode(o.initial) i)
      AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = o.tableoid AND e.objid = o.oid AND e.deptype = 'e'))
  LOOP EXECUTE statement; END LOOP;
END $wehub$;
"""


def reset_privileges_sql(plan: MigrationPlan) -> str:
    """Undo what Supabase's default privileges granted to the objects just created.

    Supabase grants every new table in ``public`` to anon and authenticated by default; a
    VPS table that was never granted to them must not become readable through the API.
    The VPS privileges are applied next, so each object ends with exactly its VPS grants.
    """
    return "SELECT pg_catalog.set_config('search_path', '', false);\n" + sql.SQL(_RESET_PRIVILEGES).format(
        **_app_scope(plan.app_schemas)).as_string()


def _name_forms(name: str) -> tuple[str, ...]:
    """A name as pg_dump may print it: bare when it needs no quotes, and double-quoted."""
    quoted = quote_pattern(name)
    return (name, quoted) if _PLAIN_NAME.fullmatch(name) else (quoted,)


def _unquote(role: str) -> str:
    return role[1:-1].replace('""', '"') if role.startswith('"') else role


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="surrogateescape")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    return path


def _rewrite_file(path: Path, rewrite: Callable[[str], tuple[str, int]]) -> int:
    text, count = rewrite(_read(path))
    _write(path, text)
    return count


# --- verify ----------------------------------------------------------------------------------

_OWNED_SEQUENCES = """
SELECT n.nspname, c.relname, a.attname, sn.nspname || '.' || s.relname, q.seqincrement
  FROM pg_depend d
  JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
  JOIN pg_sequence q ON q.seqrelid = s.oid
  JOIN pg_class c ON c.oid = d.refobjid AND c.relkind IN ('r', 'p') JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
  WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
    AND n.nspname = ANY({schemas}::name[]) ORDER BY 1, 2, 3"""


def verify_supabase(plan: MigrationPlan, dump: DumpResult, target: ConnectionInfo) -> MigrationVerification:
    """Fingerprint the app schemas on Supabase against the VPS snapshot; then make sure sequences continue.

    A sequence behind its column's maximum would make the application's next insert collide
    with a migrated row, so each column-owned sequence must lie beyond it.
    """
    started = time.monotonic()
    with connect_or_explain(target, "Supabase") as conn:
        copy = fingerprint_database(conn, plan.app_schemas, plan.excluded_tables)
        problems = compare_fingerprints(dump.fingerprint, copy, dump.sequences_after)
        owned = _rows(conn, _OWNED_SEQUENCES, schemas=plan.app_schemas)
        problems += [problem for row in owned if (problem := _sequence_problem(conn, row, copy.sequences))]
    if problems:
        raise VerificationFailed(f"verification failed: {first_of(problems)}")
    return MigrationVerification(time.monotonic() - started, len(copy.tables), copy.total_rows, len(owned), copy)


def _sequence_problem(conn: psycopg.Connection, row: tuple, positions: dict[str, int]) -> str | None:
    schema, table, column, sequence, increment = row
    extreme = sql.SQL("max" if increment > 0 else "min")
    reached = conn.execute(sql.SQL("SELECT {}({}) FROM {}.{}").format(
        extreme, sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table))).fetchone()[0]
    upcoming = positions.get(sequence)
    if reached is None or upcoming is None:
        return None
    if (increment > 0 and upcoming <= reached) or (increment < 0 and upcoming >= reached):
        return (f"sequence {sequence} would next hand out {upcoming}, but {schema}.{table}.{column} "
                f"already holds {reached}: the next insert would collide")
    return None
