"""Whole databases on a server: whether one exists, creating, dropping, who is connected."""

from __future__ import annotations

import psycopg
from psycopg import sql


def database_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


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


def connected_sessions(conn: psycopg.Connection, database: str) -> list[int]:
    """Sessions that keep ``database`` from being renamed or dropped.

    Autovacuum workers do not count: the server cancels them itself for a rename or a drop,
    and a fresh copy draws them for minutes.
    """
    return [r[0] for r in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        " AND backend_type <> 'autovacuum worker'", (database,))]
