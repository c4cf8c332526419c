"""What of a Supabase database can live on a vanilla PostgreSQL, and what must be left out.

The VPS copy has to serve the application during an outage and be migrated back later,
so it keeps the app's RLS policies, grants and foreign keys into ``auth.users``. Only what
a vanilla server cannot hold is left out, and every left-out object is reported by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg

from wehub_backup.pg.catalog import DatabaseCatalog
from wehub_backup.pg.names import parse_qualified, quote_pattern
from wehub_backup.pg.toc import TOC_ENTRY, entry_schema
from wehub_backup.supabase.schemas import EXTENSIONS_NOT_IN_A_COPY

_EXTENSION_CATALOG = 3079
_EVENT_TRIGGER_CATALOG = 3466
_ATTACHED_ENTRY = re.compile(
    r"^(ACL|COMMENT|SECURITY LABEL) (\S+) (?:FUNCTION|PROCEDURE|AGGREGATE|TABLE|SEQUENCE|VIEW|TYPE|DOMAIN"
    r"|MATERIALIZED VIEW|FOREIGN TABLE|COLUMN) (.+)$"
)


@dataclass(frozen=True)
class LeftOut:
    """One object that is deliberately not copied, and why."""

    kind: str
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.reason}"


@dataclass
class CopyScope:
    """Which schemas, tables and archive entries a copy keeps."""

    excluded_schemas: list[str]
    excluded_tables: list[tuple[str, str]]
    skipped_extension_oids: set[int] = field(default_factory=set)
    skipped_extension_names: set[str] = field(default_factory=set)
    skipped_event_trigger_oids: set[int] = field(default_factory=set)
    skipped_event_trigger_names: set[str] = field(default_factory=set)
    skipped_relation_oids: set[int] = field(default_factory=set)
    skipped_schemas: set[str] = field(default_factory=set)
    skipped_members: dict[str, set[str]] = field(default_factory=dict)
    left_out: list[LeftOut] = field(default_factory=list)
    source_schemas: list[str] = field(default_factory=list)

    def pg_dump_arguments(self) -> list[str]:
        """Exact-name patterns: quoting makes pg_dump treat ``*``, ``?`` and case literally."""
        args = [f"--exclude-schema={quote_pattern(s)}" for s in self.excluded_schemas]
        args += [f"--exclude-table={quote_pattern(s)}.{quote_pattern(t)}" for s, t in self.excluded_tables]
        return args

    def keeps_schema(self, schema: str) -> bool:
        return schema not in self.excluded_schemas and schema not in self.skipped_schemas

    def kept_schemas(self, schemas: list[str]) -> list[str]:
        return [s for s in schemas if self.keeps_schema(s)]

    def keeps_table(self, schema: str, table: str) -> bool:
        return self.keeps_schema(schema) and (schema, table) not in self.excluded_tables


def plan_scope(
    source: DatabaseCatalog,
    target_extensions: dict[str, str],
    excluded_schemas: list[str],
    excluded_tables: list[str],
) -> CopyScope:
    """Decide what to leave out, from the source's catalog and what the target can install."""
    present = set(source.schemas)
    scope = CopyScope(
        excluded_schemas=[s for s in excluded_schemas if s in present],
        excluded_tables=[],
        source_schemas=sorted(present),
    )
    for schema in scope.excluded_schemas:
        scope.left_out.append(LeftOut("schema", schema, "Supabase-internal schema (configurable exclusion)"))
    for schema, table in map(parse_qualified, excluded_tables):
        if schema in present and scope.keeps_schema(schema):
            scope.excluded_tables.append((schema, table))
    for schema, table in source.unreadable_relations:
        if scope.keeps_table(schema, table):
            scope.excluded_tables.append((schema, table))
    for schema, table in scope.excluded_tables:
        unreadable = (schema, table) in source.unreadable_relations
        reason = f"not readable by {source.server.current_user}" if unreadable else "configurable exclusion"
        scope.left_out.append(LeftOut("table", f"{schema}.{table}", reason))
    _skip_unavailable_extensions(scope, source, target_extensions)
    _skip_platform_event_triggers(scope, source)
    return scope


def _skip_unavailable_extensions(scope: CopyScope, source: DatabaseCatalog, target_extensions: dict[str, str]) -> None:
    """Skip what the target cannot install; for other versions, skip privileges on members.

    A different extension version may have different member objects (PostgreSQL 17's
    pg_stat_statements_reset has a new signature), so grants on them cannot be replayed.
    """
    for ext in source.extensions:
        if ext.name in EXTENSIONS_NOT_IN_A_COPY:
            reason = EXTENSIONS_NOT_IN_A_COPY[ext.name]
        elif ext.name in target_extensions and target_extensions[ext.name] != ext.version and scope.keeps_schema(ext.schema):
            _skip_member_privileges(scope, ext.members)
            scope.left_out.append(LeftOut(
                "privileges", f"on members of extension {ext.name}",
                f"version {ext.version} on the source, {target_extensions[ext.name]} on the target"))
            continue
        elif ext.name not in target_extensions:
            reason = "extension not available on the target server"
        elif not scope.keeps_schema(ext.schema):
            reason = f"installed in excluded schema {ext.schema}"
        else:
            continue
        scope.skipped_extension_oids.add(ext.oid)
        scope.skipped_extension_names.add(ext.name)
        scope.skipped_relation_oids.update(ext.config_relation_oids)
        scope.skipped_schemas.update(ext.member_schemas)
        _skip_member_privileges(scope, ext.members)
        scope.left_out.append(LeftOut("extension", ext.name, reason))


def _skip_member_privileges(scope: CopyScope, members: tuple[tuple[str, str], ...]) -> None:
    for schema, name in members:
        scope.skipped_members.setdefault(schema, set()).add(name)


def _skip_platform_event_triggers(scope: CopyScope, source: DatabaseCatalog) -> None:
    """Event triggers of the platform's superuser watch the platform's own DDL."""
    superusers = {role.name for role in source.roles if role.superuser}
    for trigger in source.event_triggers:
        if trigger.owner in superusers:
            scope.skipped_event_trigger_oids.add(trigger.oid)
            scope.skipped_event_trigger_names.add(trigger.name)
            scope.left_out.append(LeftOut("event trigger", trigger.name, f"owned by platform superuser {trigger.owner}"))


# Objects the copy will hold that need an object it leaves out: the restore would fail on them,
# after the whole dump was paid for. Left out: members of skipped extensions (and their array
# types), whatever lives in an excluded schema, excluded tables (and their row types), the
# platform's event triggers, and what those own.
_DEPENDENTS_ON_LEFT_OUT = """
WITH excluded_tables AS (
  SELECT c.oid, c.reltype FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%(table_schemas)s::text[], %(table_names)s::text[]))
),
base(classid, objid) AS (
  SELECT classid, objid FROM pg_depend
   WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e' AND refobjid = ANY(%(extensions)s::oid[])
  UNION SELECT 'pg_event_trigger'::regclass, unnest(%(event_triggers)s::oid[])
  UNION SELECT 'pg_class'::regclass, oid FROM excluded_tables
  UNION SELECT 'pg_type'::regclass, reltype FROM excluded_tables
  UNION SELECT 'pg_class'::regclass, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = ANY(%(schemas)s::text[])
  UNION SELECT 'pg_proc'::regclass, p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname = ANY(%(schemas)s::text[])
  UNION SELECT 'pg_type'::regclass, t.oid FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
   WHERE n.nspname = ANY(%(schemas)s::text[])
),
left_out(classid, objid) AS (
  SELECT classid, objid FROM base
  UNION SELECT 'pg_type'::regclass, t.oid FROM pg_type t JOIN base b ON b.classid = 'pg_type'::regclass
   AND b.objid = t.typelem WHERE t.typcategory = 'A'
)
SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid), pg_describe_object(d.refclassid, d.refobjid, 0),
       (pg_identify_object(d.classid, d.objid, d.objsubid)).schema
  FROM pg_depend d JOIN left_out r ON r.classid = d.refclassid AND r.objid = d.refobjid
 WHERE d.deptype = 'n'
   AND NOT EXISTS (SELECT 1 FROM left_out o WHERE o.classid = d.classid AND o.objid = d.objid)
   AND NOT EXISTS (SELECT 1 FROM pg_depend m WHERE m.classid = d.classid AND m.objid = d.objid AND m.deptype = 'e')
   AND NOT EXISTS (SELECT 1 FROM pg_depend a JOIN left_out o ON o.classid = a.refclassid AND o.objid = a.refobjid
                    WHERE a.classid = d.classid AND a.objid = d.objid AND a.deptype IN ('a', 'i'))
 ORDER BY 1, 2"""


def dependents_on_left_out(conn: psycopg.Connection, scope: CopyScope) -> list[str]:
    """Objects the copy keeps that depend on one it leaves out, each as one line.

    A view on Vault, a column of a type from an extension the VPS lacks, a default calling a
    Supabase-only function: pg_dump writes them, and the restore fails on them. Found here,
    the run stops before a byte of the dump is paid for.
    """
    with conn.transaction():
        conn.execute("SET LOCAL search_path = pg_catalog")  # every name described schema-qualified
        rows = conn.execute(_DEPENDENTS_ON_LEFT_OUT, {
            "extensions": sorted(scope.skipped_extension_oids),
            "event_triggers": sorted(scope.skipped_event_trigger_oids),
            "schemas": sorted(set(scope.excluded_schemas) | scope.skipped_schemas),
            "table_schemas": [s for s, _ in scope.excluded_tables], "table_names": [t for _, t in scope.excluded_tables],
        }).fetchall()
    return [f"{dependent} depends on {referenced}, which the copy leaves out"
            for dependent, referenced, schema in rows if schema is None or scope.keeps_schema(schema)]


def filter_archive_listing(listing: str, scope: CopyScope) -> str:
    """Comment out the archive entries a copy leaves out (``pg_restore -l`` format, for ``-L``)."""
    lines = []
    for line in listing.splitlines():
        lines.append(f";{line}" if _is_left_out(line, scope) else line)
    return "\n".join(lines) + "\n"


def _is_left_out(line: str, scope: CopyScope) -> bool:
    match = TOC_ENTRY.match(line)
    if not match:
        return False
    catalog, oid, rest = int(match["catalog"]), int(match["oid"]), match["rest"]
    if catalog == _EXTENSION_CATALOG and oid in scope.skipped_extension_oids:
        return True
    if catalog == _EVENT_TRIGGER_CATALOG and oid in scope.skipped_event_trigger_oids:
        return True
    if rest.startswith(("TABLE DATA ", "SEQUENCE SET ")) and oid in scope.skipped_relation_oids:
        return True
    if _is_attached_to_skipped(rest, scope):
        return True
    schema = entry_schema(rest, scope.source_schemas)
    if schema in scope.skipped_schemas or schema in scope.excluded_schemas:
        return True
    return _names_skipped_member(rest, scope)


def _is_attached_to_skipped(rest: str, scope: CopyScope) -> bool:
    """A comment on a skipped extension or event trigger, or a comment or grant on a skipped
    schema (an extension's own schema, such as pg_cron's ``cron``, that the app granted on)."""
    attached = (("COMMENT", "EXTENSION", scope.skipped_extension_names),
                ("COMMENT", "EVENT TRIGGER", scope.skipped_event_trigger_names),
                ("COMMENT", "SCHEMA", scope.skipped_schemas), ("ACL", "SCHEMA", scope.skipped_schemas))
    return any(f"{rest} ".startswith(f"{what} - {kind} {tag} ")
               for what, kind, names in attached for name in names for tag in _tag_forms(name))


def _names_skipped_member(rest: str, scope: CopyScope) -> bool:
    """An ACL or comment on an object of a skipped extension (its privileges differ from the default)."""
    match = _ATTACHED_ENTRY.match(rest)
    if not match or match.group(2) not in scope.skipped_members:
        return False
    name = match.group(3)
    return any(name == tag or name.startswith((tag + "(", tag + " ", tag + "."))
               for member in scope.skipped_members[match.group(2)] for tag in _tag_forms(member))


def _tag_forms(name: str) -> tuple[str, str]:
    """A name as pg_dump may print it in a tag: bare, or double-quoted when it needs quoting."""
    return name, quote_pattern(name)
