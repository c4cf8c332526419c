"""The run lock: one run per target database at a time, across processes and machines."""

from __future__ import annotations

import psycopg

from wehub_backup.errors import ConcurrentRun


class TargetLock:
    """A session-level advisory lock on the VPS, one per target, held for a whole run.

    The lock lives as long as its connection: if the run's process dies, PostgreSQL
    releases it, so a crashed run never blocks the next one.
    """

    _held: dict[str, psycopg.Connection] = {}

    @classmethod
    def acquire(cls, run_id: str, conn: psycopg.Connection, target: str) -> None:
        got = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"wehub_backup/{target}",)).fetchone()[0]
        if not got:
            conn.close()
            raise ConcurrentRun(f"another backup or migration run for {target} is running; this run changed nothing")
        cls._held[run_id] = conn

    @classmethod
    def holds(cls, run_id: str) -> bool:
        return run_id in cls._held

    @classmethod
    def release(cls, run_id: str) -> None:
        conn = cls._held.pop(run_id, None)
        if conn is not None:
            conn.close()
