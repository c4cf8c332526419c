"""What every job checks before it changes anything, and how it words what it found."""

from __future__ import annotations

import psycopg

from wehub_backup.errors import PreflightError, SettingsError
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


def first_of(problems: list[str]) -> str:
    """The first problem, and how many more there are: one line for the run's failure."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{problems[0]}{more}"


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
