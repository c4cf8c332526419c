"""The dump's snapshot: exported, every dumped table locked in it, and proven to see their rows.

pg_dump reads in a snapshot this project exports, and the fingerprint reads the same one.
Between the export and pg_dump's own table locks two things can go wrong:

- A table rewrite (TRUNCATE, an ALTER TABLE that rewrites, VACUUM FULL, CLUSTER) that commits
  in that window gives the table a new file whose rows the snapshot cannot see (rewrites are
  not MVCC-safe): pg_dump and the fingerprint would both read the table empty, and agree. So
  once every table is locked (no rewrite can start then), each table's file as the snapshot
  sees it is compared with the current one; if one differs, another snapshot is taken.
- A session holding one table's ACCESS EXCLUSIVE lock that then asks for a table the run has
  read deadlocks with it: pg_dump waits for that session, which waits for the snapshot
  session, which waits for pg_dump to finish; PostgreSQL sees no cycle. So the snapshot
  session takes every lock itself before the fingerprint and pg_dump start, all at once or
  none (NOWAIT, given back on a conflict): while it waits for a lock it holds no table lock
  anybody could be waiting for. The wait is bounded and names the session in the way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

import psycopg
from psycopg import errors, sql

from wehub_backup.config import LOCK_TIMEOUT_ENV
from wehub_backup.errors import LockConflict, SourceChanged
from wehub_backup.pg.digests import set_stable_output

SNAPSHOT_ATTEMPTS = 3
# The lock wait of a session reading tables the snapshot session holds (pg_dump, a stream copy's
# reader): every lock it asks for is one that session has already, so it can only wait behind a
# session that asked for ACCESS EXCLUSIVE after that: a session that waits for the run to end.
# Waiting longer cannot help; giving way soon lets that session (an app's migration, say) go on
# before its own timeouts fail it.
HELD_TABLE_LOCK_WAIT_S = 10
_FIRST_PAUSE_S, _LONGEST_PAUSE_S = 0.05, 1.0

# What pg_dump locks (plain and partitioned tables) in the dumped scope, named as the snapshot
# sees them: a table dropped or renamed since then is then missing from the locks taken, and
# named. (has_table_privilege knows no dropped table: NULL, kept.)
_DUMPED_TABLES = """
SELECT c.oid, format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%(schemas)s)
  AND NOT (n.nspname || '.' || c.relname) = ANY(%(excluded)s)
  AND has_table_privilege(c.oid, 'SELECT') IS NOT FALSE
ORDER BY c.oid"""
# pg_class as the snapshot sees it against the catalog as it is now (pg_relation_filenode reads
# the current row): a table rewritten since the snapshot has another file.
_REWRITTEN = """
SELECT c.oid::regclass::text FROM pg_class c
WHERE c.oid = ANY(%(oids)s::oid[]) AND c.relkind = 'r' AND c.relfilenode IS DISTINCT FROM pg_relation_filenode(c.oid)
ORDER BY 1"""
# Tables the session holds no lock on: those whose name no longer leads to them first (dropped
# or renamed since the snapshot: locking by name failed, or locked another table).
_NOT_LOCKED = """
SELECT t.name FROM unnest(%(oids)s::oid[], %(names)s::text[]) AS t(oid, name)
WHERE NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'relation' AND l.relation = t.oid
                    AND l.pid = pg_backend_pid() AND l.granted
                    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
ORDER BY to_regclass(t.name) IS DISTINCT FROM t.oid DESC, 1"""
# Sessions holding or queued for ACCESS EXCLUSIVE on one of the tables: the only lock mode
# that conflicts with the ACCESS SHARE a dump takes. pg_stat_activity keeps the figures it read
# first in a transaction, so they are cleared before each look.
_EXCLUSIVE_LOCKERS = """
SELECT l.relation::regclass::text, l.pid, coalesce(a.application_name, ''), l.granted,
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8, a.query_start
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND l.pid <> pg_backend_pid()
  AND l.relation = ANY(%(oids)s::oid[])
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY l.granted DESC, a.xact_start NULLS LAST"""


def held_table_lock_wait_s(lock_timeout_s: float) -> float:
    """The lock wait of a reader of the held tables: ``HELD_TABLE_LOCK_WAIT_S``, or the run's lock timeout if shorter."""
    return min(lock_timeout_s, HELD_TABLE_LOCK_WAIT_S)


class TableOid(Protocol):
    """A table as the lock queries name it: by its OID."""

    @property
    def oid(self) -> int: ...


@dataclass(frozen=True)
class DumpedTable:
    oid: int
    name: str  # schema-qualified, quoted as SQL needs it


@dataclass(frozen=True)
class ExclusiveLocker:
    """A session holding, or queued for, ACCESS EXCLUSIVE on one of the dumped tables."""

    table: str
    pid: int
    application_name: str
    granted: bool
    transaction_seconds: float | None
    query_start: datetime | None

    def describe(self) -> str:
        """The session as an operator finds it in pg_stat_activity (no query text: it may hold data)."""
        opened = f"{self.transaction_seconds:.0f} s" if self.transaction_seconds is not None else "unknown"
        started = (self.query_start.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
                   if self.query_start else "unknown")
        return (f"session pid {self.pid} (application_name {self.application_name!r}, "
                f"transaction open {opened}, query started {started})")


def export_locked_snapshot(conn: psycopg.Connection, schemas: list[str], excluded_tables: list[tuple[str, str]],
                           lock_timeout_s: float, log: Callable[[str], None]) -> tuple[str, list[DumpedTable]]:
    """Export a snapshot in ``conn``'s new REPEATABLE READ transaction, with every dumped table
    locked ACCESS SHARE and seen by the snapshot as it is now; the snapshot's name and the tables.

    A snapshot that cannot see a table's rows (it was rewritten, dropped or renamed after the
    export) is given up for another, up to ``SNAPSHOT_ATTEMPTS`` times.
    """
    for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        set_stable_output(conn)
        tables = [DumpedTable(*row) for row in conn.execute(_DUMPED_TABLES, {
            "schemas": schemas, "excluded": [f"{schema}.{table}" for schema, table in excluded_tables]})]
        lock_tables(conn, tables, lock_timeout_s)
        changed = unseen_changes(conn, tables)
        if not changed:
            return snapshot, tables
        conn.rollback()
        log(f"{changed[0]} after the dump's snapshot was taken; taking another ({attempt} of {SNAPSHOT_ATTEMPTS})")
    raise SourceChanged(f"{changed[0]} after the dump's snapshot was taken (attempts: {SNAPSHOT_ATTEMPTS}; a "
                        "snapshot older than such a change cannot see the table's rows, a rewritten table would "
                        "look empty): run the dump again once that maintenance or migration is over")


def lock_tables(conn: psycopg.Connection, tables: list[DumpedTable], timeout_s: float) -> None:
    """ACCESS SHARE on every table at once, or none: on a conflict the locks taken are given back
    (a savepoint) and the whole set is tried again after a pause, until ``timeout_s`` has passed.

    A table dropped since the snapshot stops the attempt; ``unseen_changes`` then names it.
    """
    if not tables:
        return
    statement = sql.SQL("LOCK TABLE ONLY {} IN ACCESS SHARE MODE NOWAIT").format(
        sql.SQL(", ").join(sql.SQL(table.name) for table in tables))
    deadline, pause = time.monotonic() + timeout_s, _FIRST_PAUSE_S
    while True:
        try:
            with conn.transaction():
                conn.execute(statement)
            return
        except errors.UndefinedTable:
            return
        except errors.LockNotAvailable:
            pass
        if time.monotonic() >= deadline:
            raise LockConflict(_timeout_message(conn, tables, timeout_s))
        time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
        pause = min(pause * 2, _LONGEST_PAUSE_S)


def unseen_changes(conn: psycopg.Connection, tables: list[DumpedTable]) -> list[str]:
    """Tables whose rows the snapshot cannot see as they are now: left unlocked (dropped or
    renamed since the snapshot), or rewritten since."""
    oids = [table.oid for table in tables]
    missing = [f"table {row[0]} was dropped or renamed" for row in conn.execute(
        _NOT_LOCKED, {"oids": oids, "names": [table.name for table in tables]})]
    rewritten = [f"table {row[0]} was rewritten (TRUNCATE, VACUUM FULL, CLUSTER or an ALTER TABLE that rewrites)"
                 for row in conn.execute(_REWRITTEN, {"oids": oids})]
    return missing + rewritten


def exclusive_lockers(conn: psycopg.Connection, tables: Sequence[TableOid]) -> list[ExclusiveLocker]:
    """Sessions holding (first) or queued for ACCESS EXCLUSIVE on any of ``tables``."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return [ExclusiveLocker(*row) for row in conn.execute(_EXCLUSIVE_LOCKERS, {"oids": [t.oid for t in tables]})]


def gave_way_cause(conn: psycopg.Connection, tables: Sequence[TableOid], step: str = "dump",
                   reader: str = "pg_dump") -> str | None:
    """Why ``reader`` (pg_dump, or a copy's reader) failed to lock a table the snapshot session holds,
    if another session is the cause.

    The reader can only wait for such a table behind a session queued for its ACCESS EXCLUSIVE
    lock after the snapshot session took it: that session waits for the run's ``step`` to end, and
    the step for the reader, so the reader gives way (its lock wait is short) and the step fails.
    """
    queued = [locker for locker in exclusive_lockers(conn, tables) if not locker.granted]
    if not queued:
        return None
    first = queued[0]
    return (f"lock conflict on table {first.table}: {first.describe()} asked for ACCESS EXCLUSIVE while the "
            f"{step} held the table, and {reader} would have waited behind it (a deadlock PostgreSQL cannot "
            f"see); the {step} gave way: run it again once that session's change is done")


def _timeout_message(conn: psycopg.Connection, tables: list[DumpedTable], timeout_s: float) -> str:
    lockers = exclusive_lockers(conn, tables)
    if not lockers:
        return (f"lock wait on the dumped tables gave up after {timeout_s:.0f} s: other sessions kept taking "
                f"ACCESS EXCLUSIVE locks on them (none holds one now); run the dump again or raise {LOCK_TIMEOUT_ENV}")
    first = lockers[0]
    verb = "holds" if first.granted else "is queued for"
    return (f"lock wait on table {first.table} gave up after {timeout_s:.0f} s: {first.describe()} {verb} "
            f"ACCESS EXCLUSIVE on it; end that session's transaction, or raise {LOCK_TIMEOUT_ENV}")
