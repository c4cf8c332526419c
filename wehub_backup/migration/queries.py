"""The migration's catalog queries, kept as files in ``sql/``, and how they are run."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

_SQL_DIRECTORY = Path(__file__).with_name("sql")


def read_query(name: str) -> str:
    """The text of ``sql/<name>.sql``; its header comment says what a row means and who uses it."""
    return (_SQL_DIRECTORY / f"{name}.sql").read_text(encoding="utf-8")


# Emptied and refilled, never dropped: Supabase keeps its owner, grants and default privileges.
KEPT_SCHEMAS = ("public",)


# What extensions made (their members and what depends on those internally), as a subquery.
EXTENSION_MADE = sql.SQL(read_query("extension_made"))


def app_scope(schemas: list[str]) -> dict[str, sql.Composable]:
    return {"schemas": sql.Literal(schemas), "kept": sql.Literal(list(KEPT_SCHEMAS)), "extension_made": EXTENSION_MADE}


def catalog_rows(conn: psycopg.Connection, query: str, **values: object) -> list[tuple]:
    """Run a catalog query whose ``{name}`` placeholders take literal values."""
    composed = sql.SQL(query).format(**{k: v if isinstance(v, sql.Composable) else sql.Literal(v) for k, v in values.items()})
    return conn.execute(composed).fetchall()
