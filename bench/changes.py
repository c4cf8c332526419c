"""How an application changes the benchmark's source between two backups (the incremental runs).

A day of an app's writes: new rows with new keys (past the end of the key range), updates of
the most recent rows, and a few deletes of older rows spread over the key range (each lands in a
chunk of its own, so each costs a whole chunk of egress again). They are applied to the
dataset's bulk tables, which have primary keys (``documents``, ``event_log``,
``pgbench_accounts``); each account update also logs a row in ``pgbench_history``, as
pgbench's own transaction does: that table has no primary key, so an incremental run copies it
whole whenever it changed. The harness's small application tables and pgbench's branches and
tellers are left as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psycopg
from psycopg import sql

from bench.dataset import DOCUMENT_ROWS, EVENT_LOG_ROWS, SOURCE_DATABASE, BenchServers, app_session, forget_dataset

DELETES_PER_CHANGE = 200  # one changed row in this many is a delete
GOLDEN = 0.6180339887  # shifts each round's deletes, so a later round does not aim at rows gone already


@dataclass(frozen=True)
class RowChanges:
    """What happens to one table's rows in one round."""

    inserts: int
    updates: int
    deletes: int

    @property
    def rows(self) -> int:
        return self.inserts + self.updates + self.deletes


def row_changes(rows: int, share: float) -> RowChanges:
    """``share`` of a table's ``rows`` changed: one in DELETES_PER_CHANGE deleted (at least one), the
    rest half new rows and half updates of recent ones."""
    changed = round(rows * share)
    if changed <= 0:
        return RowChanges(0, 0, 0)
    deletes = max(1, changed // DELETES_PER_CHANGE)
    inserts = (changed - deletes) // 2
    return RowChanges(inserts, changed - deletes - inserts, deletes)


def spread_keys(low: int, high: int, count: int, phase: float) -> list[int]:
    """``count`` distinct keys spread evenly over ``low..high``, each ``phase`` (0..1) of the way into
    its own stretch: scattered deletes, each in a different chunk where the stretches are wider than one."""
    span = high - low + 1
    if count <= 0 or span <= 0:
        return []
    step = span / min(count, span)
    return sorted({low + int(step * (i + phase)) for i in range(min(count, span))})


def round_phase(round_number: int) -> float:
    return (round_number * GOLDEN) % 1.0


@dataclass(frozen=True)
class ChangedTable:
    """One of the dataset's tables as the app writes it: new rows made the way the dataset makes them,
    and an update statement of the ``%(n)s`` most recent rows."""

    name: str
    key: str
    insert: str  # rows %(first)s..%(last)s
    update: str
    identity: bool  # its key comes from a sequence, which follows the inserts


_RECENT = "{key} IN (SELECT {key} FROM public.{table} ORDER BY {key} DESC LIMIT %(n)s)"
CHANGED_TABLES = (
    ChangedTable("documents", "id", DOCUMENT_ROWS,
                 "UPDATE public.documents SET status = 'published', updated_at = now(), "
                 "attributes = attributes || jsonb_build_object('edits', %(round)s) WHERE "
                 + _RECENT.format(key="id", table="documents"), identity=True),
    ChangedTable("event_log", "id", EVENT_LOG_ROWS,
                 "UPDATE public.event_log SET payload = payload || jsonb_build_object('seen', %(round)s) WHERE "
                 + _RECENT.format(key="id", table="event_log"), identity=True),
    ChangedTable("pgbench_accounts", "aid",
                 "INSERT INTO public.pgbench_accounts (aid, bid, abalance, filler) "
                 "SELECT i, (SELECT max(bid) FROM public.pgbench_branches), 0, '' "
                 "FROM generate_series(%(first)s::int, %(last)s::int) AS i",
                 "WITH updated AS (UPDATE public.pgbench_accounts SET abalance = abalance + %(round)s WHERE "
                 + _RECENT.format(key="aid", table="pgbench_accounts") + " RETURNING aid, bid) "
                 "INSERT INTO public.pgbench_history (tid, bid, aid, delta, mtime) "
                 "SELECT 1 + aid %% 10, bid, aid, %(round)s, now() FROM updated", identity=False),
)


def apply_changes(servers: BenchServers, share: float, round_number: int) -> dict[str, dict[str, int]]:
    """Change ``share`` of each changed table's rows, in one transaction; what was done, per table."""
    forget_dataset(servers.base_dir)
    done: dict[str, dict[str, int]] = {}
    with app_session(servers.source) as conn, conn.transaction():
        for table in CHANGED_TABLES:
            done[table.name] = asdict(_change_table(conn, table, share, round_number))
    servers.source.execute("CHECKPOINT", dbname=SOURCE_DATABASE)
    return done


def _change_table(conn: psycopg.Connection, table: ChangedTable, share: float, round_number: int) -> RowChanges:
    name, key = sql.Identifier("public", table.name), sql.Identifier(table.key)
    rows, low, high = conn.execute(sql.SQL("SELECT count(*), min({k}), max({k}) FROM {t}").format(
        k=key, t=name)).fetchone()
    planned = row_changes(rows, share)
    if planned.rows == 0:
        return planned
    updated = conn.execute(table.update, {"n": planned.updates, "round": round_number}).rowcount  # type: ignore[arg-type]
    doomed = spread_keys(low, high - planned.updates, planned.deletes, round_phase(round_number))
    deleted = conn.execute(sql.SQL("DELETE FROM {t} WHERE {k} = ANY(%s)").format(t=name, k=key), (doomed,)).rowcount
    if planned.inserts:
        conn.execute(table.insert, {"first": high + 1, "last": high + planned.inserts})  # type: ignore[arg-type]
    if table.identity:
        conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({q}, {c}), {m})").format(
            q=sql.Literal(f"public.{table.name}"), c=sql.Literal(table.key), m=sql.Literal(high + planned.inserts)))
    return RowChanges(planned.inserts, updated, deleted)
