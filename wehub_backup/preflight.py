"""What every job checks before it changes anything, and how it words what it found."""

from __future__ import annotations

import psycopg

from wehub_backup.errors import NotEnoughConnections, PreflightError, SettingsError
from wehub_backup.pg.catalog import money_columns
from wehub_backup.pg.connection import ConnectionInfo, error_line
from wehub_backup.supabase.schemas import TRANSACTION_POOLER_PORT


def connect_or_explain(info: ConnectionInfo, role: str, dbname: str | None = None) -> psycopg.Connection:
    """Connect, turning libpq's multi-line failures into one line that names the server."""
    if info.port == TRANSACTION_POOLER_PORT or info.lookup_port == TRANSACTION_POOLER_PORT:
        raise SettingsError(
            f"{role} port {TRANSACTION_POOLER_PORT} is Supabase's transaction pooler, which breaks pg_dump "
            "(no session state, no snapshots); use the session pooler on port 5432 or the direct host"
        )
    try:
        return info.connect(dbname)
    except psycopg.OperationalError as error:
        raise PreflightError(f"cannot connect to {role} {info.describe(dbname)}: {error_line(error)}") from None


_MONEY_SAMPLE = "SELECT (-1234567.891)::numeric::money::text"


def money_settings(dumping: psycopg.Connection, restoring: psycopg.Connection, schemas: list[str],
                   restoring_name: str) -> dict[str, str]:
    """Settings the restoring sessions need to read back the money values the dump prints.

    money prints and parses through lc_monetary, and pg_dump writes it as the dumping
    session prints it ("1.234,50 €" under de_DE): a server printing "$1,234.50" rejects
    that text. Where both print alike nothing is needed; otherwise the restoring sessions
    take the dumping side's locale, which the restoring server must have.
    """
    columns = money_columns(dumping, schemas)
    if not columns:
        return {}
    locale, printed = dumping.execute(f"SELECT current_setting('lc_monetary'), ({_MONEY_SAMPLE})").fetchone()
    if restoring.execute(_MONEY_SAMPLE).fetchone()[0] == printed:
        return {}
    try:
        restoring.execute("SELECT pg_catalog.set_config('lc_monetary', %s, false)", (locale,))
    except psycopg.Error:
        raise SettingsError(
            f"money column {columns[0]} is printed in the source's lc_monetary locale {locale}, which "
            f"{restoring_name} does not have: generate that locale there or give both servers one they share"
        ) from None
    restoring.execute("RESET lc_monetary")
    return {"lc_monetary": locale}


_CONNECTION_SLOTS = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true)::int, 0),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()),
       r.rolsuper, r.rolname, r.rolconnlimit,
       (SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND usesysid = r.oid AND pid <> pg_backend_pid()),
       d.datname, d.datconnlimit,
       (SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND datid = d.oid AND pid <> pg_backend_pid())
FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()
"""


def free_connection_slots(conn: psycopg.Connection) -> tuple[int, str]:
    """How many more sessions this login can open to this database once ``conn`` closes, and
    the limit that decides it (in words, for a refusal).

    The server's slots less the reserved ones (kept for an administrator; ``reserved_connections``
    since PostgreSQL 16) less the sessions in use; for a login that is not a superuser, its
    role's and the database's connection limits too.
    """
    (max_connections, reserved, in_use, superuser, role, role_limit, role_in_use,
     database, database_limit, database_in_use) = conn.execute(_CONNECTION_SLOTS).fetchone()
    limits = [(max_connections - reserved - in_use,
               f"max_connections {max_connections}, {reserved} reserved, {in_use} in use")]
    if not superuser and role_limit >= 0:
        limits.append((role_limit - role_in_use, f"role {role}'s connection limit {role_limit}, {role_in_use} in use"))
    if not superuser and database_limit >= 0:
        limits.append((database_limit - database_in_use,
                       f"database {database}'s connection limit {database_limit}, {database_in_use} in use"))
    return min(limits)


def require_connection_slots(conn: psycopg.Connection, role: str, needed: int, use: str, remedy: str) -> None:
    """Refuse now, rather than after the dump's egress was paid, when ``needed`` sessions will not fit."""
    free, limit = free_connection_slots(conn)
    if free < needed:
        raise NotEnoughConnections(f"{role} has too few free connection slots: {max(free, 0)} ({limit}), and the "
                                   f"run needs {needed} there ({use}): {remedy}")
