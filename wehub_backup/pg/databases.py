"""Whole databases on a server: whether one exists, creating, dropping, renaming, what holds one open."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg
from psycopg import sql

FILE_COPY_STRATEGY_SINCE = 15


def database_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def database_oid(conn: psycopg.Connection, name: str) -> int | None:
    """The database's OID (it stays through renames), or None where there is no such database."""
    row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row[0] if row else None


def connected_database_oid(conn: psycopg.Connection) -> int:
    """The OID of the database ``conn`` is in: what it was opened to may since carry another's name."""
    return conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]


def drop_database(conn: psycopg.Connection, name: str) -> bool:
    """Drop a database this project owns (staging or the oldest generation), sessions and all."""
    if not database_exists(conn, name):
        return False
    conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    return True


def create_database(conn: psycopg.Connection, name: str, encoding: str) -> None:
    """An empty database from template0, in the source's encoding, so every byte fits."""
    conn.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {}").format(sql.Identifier(name), sql.Literal(encoding))
    )


def copy_database(conn: psycopg.Connection, name: str, template: str, server_major: int) -> None:
    """A new database as a copy of ``template``'s files (PostgreSQL refuses while any session is connected
    to it, and lets none connect meanwhile); from 15 on by copying the files (``STRATEGY FILE_COPY``, two
    checkpoints) rather than writing every block to the WAL."""
    strategy = sql.SQL(" STRATEGY FILE_COPY") if server_major >= FILE_COPY_STRATEGY_SINCE else sql.SQL("")
    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(sql.Identifier(name), sql.Identifier(template),
                                                                     strategy))


def rename_database(conn: psycopg.Connection, old: str, new: str) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


@dataclass(frozen=True)
class Blocker:
    """Something that keeps a database from being renamed: a session, a prepared transaction, a lock."""

    database: str
    kind: Literal["session", "prepared", "lock"]
    detail: str


_BLOCKERS = """
    SELECT datname, 'session', format('pid %%s %%s@%%s', pid, usename, coalesce(host(client_addr), 'local'))
                               || coalesce(' ' || quote_literal(nullif(application_name, '')), '')
    FROM pg_stat_activity WHERE datname = ANY(%(names)s) AND pid <> ALL(%(ours)s)
      AND backend_type <> 'autovacuum worker'
    UNION ALL
    SELECT database, 'prepared', format('gid %%L by %%s', gid, owner) FROM pg_prepared_xacts
    WHERE database = ANY(%(names)s)
    UNION ALL
    SELECT d.datname, 'lock', format('pid %%s holding %%s', l.pid, l.mode)
    FROM pg_locks l JOIN pg_database d ON d.oid = l.objid JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'object' AND l.classid = 'pg_database'::regclass AND l.granted
      AND d.datname = ANY(%(names)s) AND l.pid <> ALL(%(ours)s) AND a.backend_type <> 'autovacuum worker'
"""
_PHRASES = {"session": "still has {} connected session(s)", "prepared": "still has {} prepared transaction(s)",
            "lock": "is locked by {} other transaction(s)"}


def find_blockers(conn: psycopg.Connection, names: list[str], ours: list[int]) -> list[Blocker]:
    """What keeps ``names`` from being renamed now; ``ours`` are the caller's own backends.

    Autovacuum workers do not count: the server cancels them itself for a rename, and a fresh
    copy draws them for minutes. Nor does a backend still starting up: it holds its database's
    lock until it is connected, before it is listed as a session. One that waited to connect
    while a swap held the database gets its lock the moment the swap gives up, and it would be
    named as a transaction holding the database instead of what held the swap. Once connected,
    it is a session, and one stuck in its start holds up the rename, which says so.
    """
    return [Blocker(*row) for row in conn.execute(_BLOCKERS, {"names": names, "ours": ours})]


def sessions_of_application(conn: psycopg.Connection, names: list[str], application_name: str) -> list[tuple[str, int]]:
    """This login's other client sessions on ``names`` that carry ``application_name``: (database, pid).

    A session its client has closed stays listed until its backend has exited, which takes a
    moment after the close returns.
    """
    rows = conn.execute(
        "SELECT datname, pid FROM pg_stat_activity WHERE datname = ANY(%s) AND application_name = %s"
        " AND usename = current_user AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        " ORDER BY datname, pid", (names, application_name))
    return [(database, pid) for database, pid in rows]


def describe_blockers(blockers: list[Blocker]) -> str:
    """One phrase per database and kind, naming up to three of each: pids, logins, applications."""
    groups: dict[tuple[str, str], list[str]] = {}
    for blocker in blockers:
        groups.setdefault((blocker.database, blocker.kind), []).append(blocker.detail)
    return ", ".join(f"database {database} {_PHRASES[kind].format(len(details))} ({_some(details)})"
                     for (database, kind), details in groups.items())


def _some(details: list[str], shown: int = 3) -> str:
    more = f"; and {len(details) - shown} more" if len(details) > shown else ""
    return "; ".join(details[:shown]) + more


def terminate_sessions(conn: psycopg.Connection, names: list[str]) -> set[tuple[int, datetime]]:
    """End the sessions on ``names`` without waiting for them; each is returned by pid and start time.

    The sessions are chosen first (a materialized CTE), so the planner cannot call
    ``pg_terminate_backend`` on a row before the filter has run.
    """
    rows = conn.execute(
        "WITH s AS MATERIALIZED (SELECT pid, backend_start FROM pg_stat_activity WHERE datname = ANY(%s)"
        " AND pid <> pg_backend_pid() AND backend_type <> 'autovacuum worker')"
        " SELECT pid, backend_start FROM s WHERE pg_terminate_backend(pid)", (names,))
    return set(rows)
