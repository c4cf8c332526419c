"""The migration's checks: what the VPS database holds that Supabase cannot take, the extensions
and roles it needs there, and what on Supabase depends on the app schemas it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from wehub_backup.migration import managed_tables
from wehub_backup.migration.queries import EXTENSION_MADE, KEPT_SCHEMAS, app_scope, catalog_rows, read_query
from wehub_backup.pg.catalog import DatabaseCatalog
from wehub_backup.supabase.schemas import MANAGED_SCHEMAS
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
class CatalogCopy:
    """A cast or a publication: database-wide, so ``pg_dump --schema`` leaves it out; the migration recreates it.

    ``after`` lists the archive entries it needs, as (catalog OID, object OID): a cast is created
    right after the last of them, before the views and defaults that may use it.
    """

    name: str
    statements: str
    after: tuple[tuple[int, int], ...] = ()


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
    plan.left_out += [LeftOut(*row) for row in catalog_rows(src, _NOT_MIGRATED)]
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
        collisions = catalog_rows(src, _NAME_COLLISIONS, schemas=[p[0] for p in pairs], names=[p[1] for p in pairs],
                                  extension_made=EXTENSION_MADE)
        problems += [f"{row[0]} has the name of an object of an extension that lives in another schema on "
                     "Supabase, so references to it cannot be told apart: rename it" for row in collisions]
    return relocations, problems


_CASTS = read_query("casts")


def plan_casts(src: psycopg.Connection, plan: MigrationPlan) -> list[str]:
    """The database's casts are recreated; a cast Supabase's login cannot create is refused.

    Creating a cast takes ownership of its source or target type (the login owns every
    migrated type, none of Supabase's), and a binary-coercible one takes a superuser.
    """
    problems = []
    for name, statements, binary, owns_a_type, after in catalog_rows(src, _CASTS, **app_scope(plan.app_schemas)):
        if binary:
            problems.append(f"{name} is binary-coercible (WITHOUT FUNCTION), which only a superuser can create")
        elif not owns_a_type:
            problems.append(f"{name} needs ownership of one of its types, and both stay Supabase's: "
                            "only their owner can create it there")
        else:
            plan.casts.append(CatalogCopy(name, statements, tuple((int(c), int(o)) for c, o in after)))
    return problems


_PUBLICATIONS = read_query("publications")


def plan_publications(src: psycopg.Connection, tgt: psycopg.Connection, plan: MigrationPlan) -> list[str]:
    """The app's publications are recreated, and its tables added to those Supabase has already.

    Adding a table to a publication takes ownership of both (the login owns every migrated table).
    """
    existing = {name: (ours, owner) for name, ours, owner in tgt.execute(
        "SELECT pubname, pg_has_role(pubowner, 'MEMBER'), pg_get_userbyid(pubowner) FROM pg_publication")}
    excluded = [f"{schema}.{table}" for schema, table in plan.excluded_tables]
    problems = []
    for name, create, tables in catalog_rows(src, _PUBLICATIONS, **app_scope(plan.app_schemas), excluded=excluded):
        ours, owner = existing.get(name, (True, None))
        if owner is None:
            plan.publications.append(CatalogCopy(f"publication {name}", "\n".join([create, *tables])))
        elif tables and not ours:
            problems.append(f"publication {name} on Supabase is owned by {owner}, so "
                            f"{plan.target_server.current_user} cannot add the app's tables to it")
        elif tables:
            plan.publications.append(CatalogCopy(f"publication {name}", "\n".join(tables)))
    return problems


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
# How to find, in the VPS database, an object a dependent on Supabase refers to.
_LOOKUPS = {"pg_proc": "to_regprocedure", "pg_class": "to_regclass", "pg_type": "to_regtype"}
RECREATED_KINDS = ("trigger", "policy")


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
    for kind, _, dependent, referenced, _, _ in dependents:
        if kind == "publication":
            plan.left_out.append(LeftOut("publication table", dependent,
                                         "removed from the publication with the old table; add the new one back"))
        elif kind == "other":
            problems.append(f"{dependent} on Supabase depends on {referenced}, which the migration replaces; only "
                            "triggers and policies are created again: drop it first (and recreate it afterwards)")
    recreated = [row for row in dependents if row[0] in RECREATED_KINDS]
    problems += _plan_outside_dependents(tgt, src, plan, recreated)
    return problems


def _plan_outside_dependents(tgt: psycopg.Connection, src: psycopg.Connection, plan: MigrationPlan,
                             dependents: list[tuple]) -> list[str]:
    """Triggers and policies on Supabase's tables that depend on app objects are recreated after the restore.

    Dropping the app's function or table drops them with it (CASCADE asks no owner), so
    each must be one the login may create again, and refer only to what the VPS copy has.
    """
    problems = []
    for _, _, dependent, referenced, catalog, identity in dependents:
        lookup = _LOOKUPS.get(catalog)
        found = lookup and src.execute(sql.SQL("SELECT pg_catalog.{}(%s)").format(sql.Identifier(lookup)),
                                       (identity,)).fetchone()[0]
        if not found:
            problems.append(f"{dependent} on Supabase depends on {referenced}, which the VPS database does not have")
    oids = {kind: sorted({row[1] for row in dependents if row[0] == kind}) for kind in RECREATED_KINDS}
    definitions = managed_tables.read_definitions(tgt, oids["trigger"], oids["policy"])
    problems += _plan_recreations(tgt, plan, definitions, "on Supabase")
    plan.outside_oids += [d.oid for d in definitions]
    return problems


def _plan_recreations(tgt: psycopg.Connection, plan: MigrationPlan, definitions: list[managed_tables.Definition],
                      where: str) -> list[str]:
    """Add the triggers and policies to what the transaction creates; name those the login cannot create."""
    rights = managed_tables.table_rights(tgt, [d.table for d in definitions])
    problems = []
    for definition in definitions:
        why = managed_tables.creation_problem(definition, rights.get(definition.table),
                                              plan.target_server.current_user, plan.target_roles)
        if why:
            problems.append(f"{definition.description} {where} must be created again in the migration, but {why}")
            continue
        recreated, left_out = managed_tables.recreation(definition, rights[definition.table])
        plan.recreated.append(recreated)
        plan.left_out += [left_out] if left_out else []
    return problems


def managed_table_problems(src: psycopg.Connection, tgt: psycopg.Connection, plan: MigrationPlan,
                            catalog: DatabaseCatalog, target_catalog: DatabaseCatalog) -> list[str]:
    """What the VPS copy holds in Supabase's own tables and Supabase lacks: carried into a new project, else named.

    A VPS copy made by the backup holds ``auth`` and ``storage``: the app's trigger on
    ``auth.users``, its policies on ``storage.objects``, its buckets and users. A project
    without them runs the app without sign-up profiles or file rules, so they are never passed
    over in silence: a migration into a new project creates them, any other lists them.
    """
    if plan.with_users and not plan.new_project:
        return ["with_users carries the users into a new project: set new_project too "
                "(wehub-backup migrate --new-project --with-users)"]
    schemas = [s for s in MANAGED_SCHEMAS if s in catalog.schemas and s in target_catalog.schemas]
    if not schemas:
        return []
    missing = managed_tables.missing_on_target(src, tgt, schemas)
    definitions = managed_tables.read_definitions(src, [oid for kind, oid in missing if kind == "trigger"],
                                                  [oid for kind, oid in missing if kind == "policy"])
    problems = []
    if plan.new_project:
        problems += _plan_recreations(tgt, plan, definitions, "in the VPS copy")
    else:
        plan.left_out += [LeftOut(d.kind, d.description, "in the VPS copy but not on Supabase: a migration into a new "
                                                         "project (--new-project) creates it; or create it there")
                          for d in definitions]
    problems += _plan_carried_rows(src, tgt, plan, schemas)
    return problems + _hold_triggers_problems(tgt, plan)


def _plan_carried_rows(src: psycopg.Connection, tgt: psycopg.Connection, plan: MigrationPlan,
                       schemas: list[str]) -> list[str]:
    """Buckets (and on request users) the VPS copy has and Supabase lacks; the rest is named in ``left_out``."""
    problems = []
    for schema, table in (*managed_tables.USER_TABLES, managed_tables.BUCKETS, managed_tables.STORAGE_OBJECTS):
        if schema not in schemas:
            continue
        carried, problem = managed_tables.plan_rows(src, tgt, schema, table)
        is_users = (schema, table) in managed_tables.USER_TABLES
        carries = (plan.new_project and (schema, table) == managed_tables.BUCKETS) or (plan.with_users and is_users)
        if carries and problem:
            problems.append(problem)
        elif carried is None or not carried.rows:
            continue
        elif (schema, table) == managed_tables.STORAGE_OBJECTS:
            plan.left_out.append(LeftOut("storage files", f"{carried.rows} in {carried.qualified}", managed_tables.NO_FILES))
        elif carries:
            plan.carried_tables.append(carried)
        else:
            how = "--new-project --with-users" if is_users else "--new-project"
            plan.left_out.append(LeftOut("rows", f"{carried.rows} of {carried.qualified}",
                                         f"in the VPS copy but not on Supabase: {how} carries them"))
    return problems


_LIVE_TRIGGERS = """
SELECT pg_describe_object('pg_trigger'::regclass, t.oid, 0), t.tgenabled FROM pg_trigger t
  WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND NOT t.oid = ANY({expected}::oid[])
    AND t.tgrelid = ANY(ARRAY(SELECT to_regclass(x) FROM unnest({tables}::text[]) AS x)) ORDER BY 1"""


def _hold_triggers_problems(tgt: psycopg.Connection, plan: MigrationPlan) -> list[str]:
    """Triggers on Supabase's tables that would fire for every carried row must be held off, or the run refused.

    The app's own triggers there are dropped with the app schemas and created after the rows;
    any other (a webhook on auth.users, say) stays. ``session_replication_role = replica``
    holds off triggers enabled the ordinary way, not those enabled ALWAYS or REPLICA.
    """
    tables = [carried.qualified for carried in plan.carried_tables]
    live = catalog_rows(tgt, _LIVE_TRIGGERS, expected=plan.outside_oids, tables=tables) if tables else []
    problems = [f"loading the VPS copy's rows would fire {name} on Supabase, which is enabled "
                f"{'ALWAYS' if state == 'A' else 'REPLICA'} and so cannot be held off: disable it for the migration"
                for name, state in live if state in ("A", "R")]
    plan.hold_triggers = bool(live)
    if live and not managed_tables.may_hold_off_triggers(tgt):
        problems.append(f"loading the VPS copy's rows would fire {live[0][0]} on Supabase, and "
                        f"{plan.target_server.current_user} may not hold triggers off (SET session_replication_role "
                        "= replica is refused; Supabase allows it through supautils): disable it for the migration")
    return problems
