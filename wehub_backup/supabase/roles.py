"""Supabase's roles on a vanilla server: NOLOGIN stand-ins, so owners, grants and policies restore."""

from __future__ import annotations

import re

import psycopg
from psycopg import sql

from wehub_backup.pg.catalog import RoleInfo

STANDIN_COMMENT = "Stand-in for a Supabase role, created by wehub_backup so that grants, owners and policies restore."


def ensure_standin_roles(conn: psycopg.Connection, roles: list[RoleInfo]) -> list[str]:
    """Create the source's missing roles on the target as NOLOGIN stand-ins; return those created.

    Roles are cluster-wide, so this is idempotent and never alters a role the target already
    had: a stand-in carries a comment that marks it, and only stand-ins get memberships.
    """
    existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
    created = []
    for role in roles:
        if role.name in existing:
            continue
        options = ["NOLOGIN", "INHERIT" if role.inherit else "NOINHERIT"]
        if role.bypassrls:
            options.append("BYPASSRLS")
        conn.execute(sql.SQL("CREATE ROLE {} " + " ".join(options)).format(sql.Identifier(role.name)))
        conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(role.name), sql.Literal(STANDIN_COMMENT)))
        for setting in role.settings:
            name, _, value = setting.partition("=")
            conn.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(
                sql.Identifier(role.name), sql.Identifier(name), _setting_value(name, value)))
        created.append(role.name)
    _grant_standin_memberships(conn, roles)
    return created


# Settings that hold a list: one literal per element (a single literal would be one element).
_LIST_SETTINGS = frozenset({"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries"})
_LIST_ELEMENT = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([^,]*?))\s*(?:,|$)')


def _setting_value(name: str, value: str) -> sql.Composable:
    """A role setting's value as ALTER ROLE takes it; a list, as PostgreSQL prints it in
    ``rolconfig`` (``"$user", public, extensions``), becomes one literal per element."""
    if name.lower() not in _LIST_SETTINGS:
        return sql.Literal(value)
    return sql.SQL(", ").join(sql.Literal(element) for element in _list_elements(value))


def _list_elements(value: str) -> list[str]:
    elements = []
    for quoted, bare in (match.groups() for match in _LIST_ELEMENT.finditer(value)):
        if quoted is not None:
            elements.append(quoted.replace('""', '"'))
        elif bare:
            elements.append(bare)
    return elements


def _grant_standin_memberships(conn: psycopg.Connection, roles: list[RoleInfo]) -> None:
    standins = {r[0] for r in conn.execute(
        "SELECT rolname FROM pg_roles WHERE shobj_description(oid, 'pg_authid') = %s", (STANDIN_COMMENT,))}
    present = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
    granted = {(r[0], r[1]) for r in conn.execute(
        """SELECT g.rolname, m.rolname FROM pg_auth_members a
           JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member""")}
    for role in roles:
        if role.name not in standins:
            continue
        for group in role.member_of:
            if group in present and (group, role.name) not in granted:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role.name)))
