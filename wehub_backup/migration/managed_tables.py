"""What an app keeps in Supabase's own tables, and how a migration carries it.

An app is more than its schemas: a trigger on ``auth.users`` creates each new user's profile,
policies on ``storage.objects`` decide who reads which file, ``storage.buckets`` holds its
buckets and ``auth.users`` its users. They live in schemas Supabase manages, which a migration
never replaces, so they are created one by one inside the migration's transaction. Each needs
what Supabase lets its non-superuser ``postgres`` do there: the TRIGGER privilege for a trigger,
ownership of the table or a listing in supautils' ``policy_grants`` for a policy, INSERT for
rows, and ``session_replication_role`` (which supautils lets ``postgres`` set) to load users
without firing the triggers already on their tables. What it lacks is refused by name before
anything changes.

Catalog texts (``regclass``, ``pg_get_expr``) are read with an empty ``search_path``, so every
name in them is schema-qualified and means the same on the other server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import psycopg
from psycopg import sql

from wehub_backup.files import open_private
from wehub_backup.migration.queries import read_query
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.digests import TableFingerprint, set_stable_output, table_digest
from wehub_backup.supabase.scope import LeftOut

# Rows a new project lacks that a migration may carry, in load order (foreign keys run this way).
USER_TABLES = (("auth", "users"), ("auth", "identities"), ("auth", "mfa_factors"))
BUCKETS = ("storage", "buckets")
# The records of stored files: the files themselves are in Supabase Storage, not in the database.
STORAGE_OBJECTS = ("storage", "objects")
NO_FILES = ("the files are in Supabase Storage, not in the database: copy them with the Storage API or CLI; "
            "their rows are not carried without them")


@dataclass(frozen=True)
class Definition:
    """A trigger or policy as its server describes it, ready to be created elsewhere."""

    kind: str  # 'trigger' or 'policy'
    oid: int
    description: str  # pg_describe_object's words: "policy x on table storage.objects"
    table: str
    name: str
    statement: str
    comment: str | None
    roles: tuple[str, ...]  # the roles a policy applies to (PUBLIC not among them)


@dataclass(frozen=True)
class Recreated:
    """A trigger or policy on a table outside the app schemas, created inside the migration's transaction."""

    kind: str
    table: str
    name: str
    description: str
    statements: str


@dataclass(frozen=True)
class TableRights:
    """What the Supabase login may do to one table it does not necessarily own."""

    owner: str
    owns: bool
    may_trigger: bool
    policy_granted: bool  # listed for the login in supautils.policy_grants


@dataclass(frozen=True)
class CarriedTable:
    """Rows of a Supabase table the VPS copy holds and Supabase lacks (by primary key), to be loaded."""

    schema: str
    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    present_keys: tuple[str, ...]  # keys Supabase already has: those rows stay as they are
    rows: int

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def not_present(self) -> sql.Composable:
        """The rows whose key Supabase did not have when the migration was planned."""
        key = sql.SQL(", ").join(sql.Identifier(column) for column in self.key)
        return sql.SQL("NOT ROW({})::text = ANY({})").format(key, sql.Literal(list(self.present_keys)))

    def digest(self, conn: psycopg.Connection) -> TableFingerprint:
        rows, digest = table_digest(conn, self.schema, self.table, columns=self.columns, where=self.not_present())
        return TableFingerprint(rows, digest)


# --- triggers and policies -------------------------------------------------------------------

_DEFINITIONS = read_query("definitions")


def read_definitions(conn: psycopg.Connection, triggers: list[int], policies: list[int]) -> list[Definition]:
    """The triggers and policies with these OIDs, as statements that create them again."""
    query = sql.SQL(_DEFINITIONS).format(triggers=sql.Literal(triggers), policies=sql.Literal(policies))
    return [Definition(kind, oid, description, table, name, statement, comment, tuple(roles))
            for kind, oid, description, table, name, statement, comment, roles in conn.execute(query).fetchall()]


_TABLE_RIGHTS = """
SELECT c.oid::regclass::text, pg_get_userbyid(c.relowner), pg_has_role(c.relowner, 'USAGE'),
       has_table_privilege(c.oid, 'TRIGGER')
  FROM pg_class c WHERE c.oid = ANY(ARRAY(SELECT to_regclass(t) FROM unnest(%s::text[]) AS t))"""


def table_rights(conn: psycopg.Connection, tables: Iterable[str]) -> dict[str, TableRights]:
    """What the login may do to each of these tables (qualified names); a table the server lacks is absent."""
    granted = policy_grant_tables(conn.execute("SELECT current_setting('supautils.policy_grants', true)").fetchone()[0],
                                  conn.execute("SELECT current_user").fetchone()[0])
    rows = conn.execute(_TABLE_RIGHTS, (sorted(set(tables)),)).fetchall()
    return {table: TableRights(owner, owns, may_trigger, table in granted)
            for table, owner, owns, may_trigger in rows}


def policy_grant_tables(setting: str | None, user: str) -> frozenset[str]:
    """The tables supautils' ``policy_grants`` lets ``user`` manage policies on without owning them.

    On Supabase it names ``auth.users``, ``storage.objects`` and the other tables users write
    policies for; elsewhere the setting does not exist. A value that is not the JSON object
    supautils reads grants nothing.
    """
    try:
        grants = json.loads(setting or "{}")
    except ValueError:
        return frozenset()
    tables = grants.get(user) if isinstance(grants, dict) else None
    return frozenset(t for t in tables if isinstance(t, str)) if isinstance(tables, list) else frozenset()


def creation_problem(definition: Definition, rights: TableRights | None, user: str,
                     target_roles: frozenset[str]) -> str | None:
    """Why the login cannot create this trigger or policy on Supabase, or None if it can."""
    if rights is None:
        return f"table {definition.table} does not exist on Supabase"
    missing = [role for role in definition.roles if role not in target_roles]
    if missing:
        return f"it applies to role {missing[0]}, which does not exist on Supabase"
    if definition.kind == "trigger" and not rights.may_trigger:
        return f"{user} lacks the TRIGGER privilege on {definition.table}"
    if definition.kind == "policy" and not (rights.owns or rights.policy_granted):
        return (f"only the owner of {definition.table} ({rights.owner}) may create policies on it, and {user} "
                "is neither a member of that role nor listed for the table in supautils.policy_grants")
    return None


def recreation(definition: Definition, rights: TableRights) -> tuple[Recreated, LeftOut | None]:
    """The statements that create the object again; its comment only where the login owns the table."""
    statements, left_out = definition.statement, None
    if definition.comment is not None and rights.owns:
        statements += sql.SQL("\nCOMMENT ON {} {} ON {} IS {};").format(
            sql.SQL(definition.kind.upper()), sql.Identifier(definition.name), sql.SQL(definition.table),
            sql.Literal(definition.comment)).as_string()
    elif definition.comment is not None:
        left_out = LeftOut(f"comment on {definition.kind}", definition.description,
                           f"only the owner of {definition.table} ({rights.owner}) may comment on it")
    return Recreated(definition.kind, definition.table, definition.name, definition.description, statements), left_out


_ADDITIONS = read_query("additions")


def missing_on_target(src: psycopg.Connection, tgt: psycopg.Connection, schemas: list[str]) -> list[tuple[str, int]]:
    """Triggers and policies on tables of ``schemas`` the VPS copy has and Supabase does not, by table and name."""
    there = {(kind, table, name) for kind, _, table, name in tgt.execute(_ADDITIONS, {"schemas": schemas})}
    return [(kind, oid) for kind, oid, table, name in src.execute(_ADDITIONS, {"schemas": schemas})
            if (kind, table, name) not in there]


def present(tgt: psycopg.Connection, recreated: list[Recreated]) -> list[str]:
    """Which of these triggers and policies Supabase has (by table and name): the ones verification finds."""
    found = tgt.execute("""
        SELECT x.description FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS x(kind, tbl, name, description)
        WHERE EXISTS (SELECT 1 FROM pg_trigger t WHERE x.kind = 'trigger' AND t.tgrelid = to_regclass(x.tbl)
                      AND t.tgname = x.name)
           OR EXISTS (SELECT 1 FROM pg_policy p WHERE x.kind = 'policy' AND p.polrelid = to_regclass(x.tbl)
                      AND p.polname = x.name)""",
        ([r.kind for r in recreated], [r.table for r in recreated], [r.name for r in recreated],
         [r.description for r in recreated])).fetchall()
    return [row[0] for row in found]


def may_hold_off_triggers(conn: psycopg.Connection) -> bool:
    """Whether the login may set ``session_replication_role`` (a superuser's, which supautils lends ``postgres``).

    Tried in a transaction that is rolled back: nothing changes.
    """
    try:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            raise psycopg.Rollback()
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


# --- rows ------------------------------------------------------------------------------------

_COLUMNS = """SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0
              AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum"""
_PRIMARY_KEY = """SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
                  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY k.n"""


def plan_rows(src: psycopg.Connection, tgt: psycopg.Connection, schema: str,
              table: str) -> tuple[CarriedTable | None, str | None]:
    """The VPS copy's rows of one Supabase table that Supabase lacks; or why they cannot be loaded.

    Rows are told apart by Supabase's primary key. Every column the VPS copy fills must exist
    on Supabase (a newer Supabase may have more; those take their defaults).
    """
    qualified = f"{schema}.{table}"
    columns = tuple(row[0] for row in src.execute(_COLUMNS, (qualified,)))
    target_columns = {row[0] for row in tgt.execute(_COLUMNS, (qualified,))}
    key = tuple(row[0] for row in tgt.execute(_PRIMARY_KEY, (qualified,)))
    if not columns or not target_columns:
        return None, None
    if not key or not set(key) <= set(columns):
        return None, f"table {qualified} on Supabase has no primary key the VPS copy fills, to tell its rows apart"
    key_text = sql.SQL("SELECT ROW({})::text FROM {}.{}").format(
        sql.SQL(", ").join(sql.Identifier(column) for column in key), sql.Identifier(schema), sql.Identifier(table))
    present_keys = tuple(row[0] for row in tgt.execute(key_text))
    uncounted = CarriedTable(schema, table, columns, key, present_keys, 0)
    rows = src.execute(sql.SQL("SELECT count(*) FROM {}.{} WHERE {}").format(
        sql.Identifier(schema), sql.Identifier(table), uncounted.not_present())).fetchone()[0]
    return CarriedTable(schema, table, columns, key, present_keys, rows), _loading_problem(
        tgt, qualified, [column for column in columns if column not in target_columns]) if rows else None


def _loading_problem(tgt: psycopg.Connection, qualified: str, missing_columns: list[str]) -> str | None:
    """Why the login cannot load rows into the table on Supabase, or None."""
    if missing_columns:
        return (f"column {qualified}.{missing_columns[0]} of the VPS copy does not exist on Supabase (its "
                f"{qualified.split('.')[0]} is of another version): its rows cannot be loaded there")
    if not tgt.execute("SELECT has_table_privilege(to_regclass(%s), 'INSERT')", (qualified,)).fetchone()[0]:
        user = tgt.execute("SELECT current_user").fetchone()[0]
        return f"{user} lacks the INSERT privilege on {qualified} on Supabase: its rows cannot be loaded there"
    return None


def write_rows_script(source: ConnectionInfo, tables: list[CarriedTable], path: Path,
                      hold_triggers: bool) -> dict[str, TableFingerprint]:
    """Write the rows to load as one psql script of ``COPY ... FROM stdin``, and fingerprint them.

    Rows and fingerprints come from one read-only snapshot of the VPS copy. With
    ``hold_triggers`` the script loads with ``session_replication_role = replica``, as
    Supabase's own restore of a project does: a trigger already on ``auth.users`` (a webhook,
    say) must not run for every user loaded.
    """
    fingerprints = {}
    # Users' password hashes go into the rows script: only the service's user may read it.
    with source.connect(autocommit=False) as src, open_private(path) as script:
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        src.read_only = True
        set_stable_output(src)
        src.execute("SET client_encoding = 'UTF8'")
        script.write(b"SET client_encoding = 'UTF8';\n")
        if hold_triggers:
            script.write(b"SET session_replication_role = replica;\n")
        for carried in tables:
            _copy_rows(src, carried, script)
            fingerprints[carried.qualified] = carried.digest(src)
        if hold_triggers:
            script.write(b"RESET session_replication_role;\n")
        src.rollback()
    return fingerprints


def _copy_rows(src: psycopg.Connection, carried: CarriedTable, script: BinaryIO) -> None:
    table = sql.SQL("{}.{}").format(sql.Identifier(carried.schema), sql.Identifier(carried.table))
    columns = sql.SQL(", ").join(sql.Identifier(column) for column in carried.columns)
    script.write(sql.SQL("COPY {} ({}) FROM stdin;\n").format(table, columns).as_bytes(src))
    with src.cursor().copy(sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT").format(
            columns, table, carried.not_present())) as copy:
        for block in copy:
            script.write(block)
    script.write(b"\\.\n")
