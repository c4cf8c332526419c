"""The migration's checks: what the VPS database holds that Supabase cannot take, the extensions
and roles it needs there, and what on Supabase depends on the app schemas it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from wehub_backup.migration.queries import KEPT_SCHEMAS, app_scope, catalog_rows, read_query
from wehub_backup.pg.catalog import DatabaseCatalog
from wehub_backup.supabase.scope import LeftOut

if TYPE_CHECKING:
    from wehub_backup.migration.plan import MigrationPlan


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


_UNSUPPORTED = read_query("unsupported")
_NOT_MIGRATED = read_query("not_migrated")
_OWNERS = read_query("owners")


def source_problems(src: psycopg.Connection, plan: MigrationPlan, catalog: DatabaseCatalog) -> list[str]:
    """What the VPS database holds that Supabase cannot take, and what is reported as not migrated."""
    problems = [f"table {s}.{t} is not readable by VPS user {catalog.server.current_user}"
                for s, t in catalog.unreadable_relations if s in plan.app_schemas]
    problems += [row[0] for row in catalog_rows(src, _UNSUPPORTED, **app_scope(plan.app_schemas))]
    plan.left_out += [LeftOut("event trigger", t.name, "a non-superuser cannot create event triggers on Supabase; "
                                                       "recreate it there if it is still needed")
                      for t in catalog.event_triggers]
    plan.left_out += [LeftOut(*row) for row in catalog_rows(src, _NOT_MIGRATED, **app_scope(plan.app_schemas))]
    plan.owners_replaced = [row[0] for row in catalog_rows(src, _OWNERS, **app_scope(plan.app_schemas))
                            if row[0] != plan.target_server.current_user]
    return problems


_NAME_COLLISIONS = read_query("name_collisions")


def plan_relocations(src: psycopg.Connection, catalog: DatabaseCatalog,
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
        collisions = catalog_rows(src, _NAME_COLLISIONS, schemas=[p[0] for p in pairs], names=[p[1] for p in pairs])
        problems += [f"{row[0]} has the name of a function of an extension that lives in another schema on "
                     "Supabase, so references to it cannot be told apart: rename it" for row in collisions]
    return relocations, problems


_GRANTS = read_query("grants")
_DEFAULT_PRIVILEGE_OWNERS = read_query("default_privilege_owners")
_POLICY_ROLES = read_query("policy_roles")


def privilege_problems(src: psycopg.Connection, plan: MigrationPlan) -> list[str]:
    """Roles the app's privileges and policies name must exist on Supabase.

    A grant to a role Supabase does not have grants nothing there, so it is left out (and
    reported); a policy cannot lose a role without changing who it applies to, so it refuses.
    """
    scope = app_scope(plan.app_schemas)
    for obj, role in catalog_rows(src, _GRANTS, **scope):
        if role not in plan.target_roles:
            plan.left_out.append(LeftOut("privilege", f"{obj} to {role}", "role does not exist on Supabase"))
    for schema, role in catalog_rows(src, _DEFAULT_PRIVILEGE_OWNERS, **scope):
        if role not in plan.member_roles:
            plan.left_out.append(LeftOut("default privileges", f"of {role} in schema {schema}",
                                         f"{plan.target_server.current_user} is not a member of {role} on Supabase"))
    return [f"{policy} applies to role {role}, which does not exist on Supabase: create the role there first"
            for policy, role in catalog_rows(src, _POLICY_ROLES, **scope) if role not in plan.target_roles]


_SCHEMA_OBJECTS = read_query("schema_objects")
_OUTSIDE_DEPENDENTS = read_query("outside_dependents")
_TRIGGER_DEFINITIONS = read_query("trigger_definitions")
_ENABLE_STATES = {"D": "DISABLE TRIGGER", "R": "ENABLE REPLICA TRIGGER", "A": "ENABLE ALWAYS TRIGGER"}


def target_problems(tgt: psycopg.Connection, src: psycopg.Connection, plan: MigrationPlan) -> list[str]:
    """Whether the app schemas on Supabase may be replaced, and what outside them depends on them."""
    if not plan.existing_schemas:
        return []
    user = plan.target_server.current_user
    problems = []
    objects = catalog_rows(tgt, _SCHEMA_OBJECTS + " ORDER BY 1, 3", schemas=plan.existing_schemas)
    for schema in dict.fromkeys(row[0] for row in objects) if not plan.overwrite else ():
        found = [f"{kind} {identity}" for s, kind, identity, _ in objects if s == schema]
        problems.append(f"schema {schema} on Supabase already holds {len(found)} object(s) (first: {found[0]}); "
                        "set overwrite: true (wehub-backup migrate --overwrite) to replace them")
    owned_by_others = catalog_rows(tgt, """SELECT s.kind, s.identity, pg_get_userbyid(s.owner) FROM (
        SELECT 'schema' AS kind, quote_ident(nspname) AS identity, nspowner AS owner FROM pg_namespace
          WHERE nspname = ANY({dropped}::name[])
        UNION ALL SELECT o.type, o.identity, o.owner FROM (""" + _SCHEMA_OBJECTS + """) o
          WHERE o.schema = ANY({kept}::name[])) s
        WHERE s.owner IS NOT NULL AND NOT pg_has_role(s.owner, 'MEMBER') ORDER BY 1, 2""",
                            dropped=plan.dropped_schemas, schemas=plan.existing_schemas, kept=list(KEPT_SCHEMAS))
    problems += [f"{kind} {identity} on Supabase is owned by {owner}, so {user} cannot replace it"
                 for kind, identity, owner in owned_by_others]
    dependents = catalog_rows(tgt, _OUTSIDE_DEPENDENTS, **app_scope(plan.existing_schemas))
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
    for oid, name, definition, enabled, qualified, may_create in catalog_rows(tgt, _TRIGGER_DEFINITIONS, oids=oids) if oids else []:
        if not may_create:
            problems.append(f"{name} must be recreated after the restore, but "
                            f"{plan.target_server.current_user} lacks the TRIGGER privilege on its table")
        table, trigger = qualified.rsplit(" ", 1)
        state = f"\nALTER TABLE {table} {_ENABLE_STATES[enabled]} {trigger};" if enabled in _ENABLE_STATES else ""
        plan.outside_triggers.append(OutsideTrigger(name, f"{definition};{state}"))
        plan.outside_trigger_oids.append(oid)
    return problems
