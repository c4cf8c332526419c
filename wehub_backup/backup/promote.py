"""Promote: swap the verified staging copy in, keeping the old copy as ``<target>__previous``.

Both renames commit together, so a crash at any moment leaves either the old state or the new one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import psycopg
from psycopg import sql

from wehub_backup.backup.plan import BackupPlan
from wehub_backup.errors import TargetBusy
from wehub_backup.pg.connection import MAINTENANCE_DATABASE, ConnectionInfo
from wehub_backup.pg.databases import connected_sessions, database_exists, drop_database
from wehub_backup.preflight import connect_or_explain
from wehub_backup.run.targets import previous_name, staging_name

SessionPolicy = Literal["wait", "terminate"]


@dataclass(frozen=True)
class PromoteResult:
    previous_kept: bool
    sessions_terminated: int
    waited_seconds: float


def promote(plan: BackupPlan, vps: ConnectionInfo, policy: SessionPolicy, timeout_seconds: float) -> PromoteResult:
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        return promote_staging(conn, plan.target, policy, timeout_seconds)


def promote_staging(
    conn: psycopg.Connection,
    target: str,
    policy: SessionPolicy = "wait",
    timeout_seconds: float = 300.0,
    poll_seconds: float = 0.5,
) -> PromoteResult:
    """Swap the verified staging database in as ``target``, keeping the old one as ``__previous``.

    Renaming needs the old target to have no sessions: with ``wait`` they are given
    ``timeout_seconds`` to leave, with ``terminate`` they are ended. Both renames commit
    together, so a failure or crash here leaves the old target in place.
    """
    staging, previous = staging_name(target), previous_name(target)
    started = time.monotonic()
    terminated = 0
    target_exists = database_exists(conn, target)
    while True:
        if target_exists and policy == "terminate":
            for pid in connected_sessions(conn, target):
                terminated += bool(conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0])
        if not target_exists or not connected_sessions(conn, target):
            try:
                if target_exists:
                    drop_database(conn, previous)  # only now: a promote that gives up keeps both generations
                _swap(conn, target, staging, previous, target_exists)
                return PromoteResult(target_exists, terminated, time.monotonic() - started)
            except psycopg.errors.ObjectInUse:
                pass
        if time.monotonic() - started > timeout_seconds:
            pids = connected_sessions(conn, target)
            raise TargetBusy(
                f"database {target} still has {len(pids)} connected session(s) after {timeout_seconds:.0f}s; "
                "the verified copy was not swapped in (set on_connected_sessions: terminate, or stop the application)"
            )
        time.sleep(poll_seconds)


def _swap(conn: psycopg.Connection, target: str, staging: str, previous: str, target_exists: bool) -> None:
    with conn.transaction():
        if target_exists:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(target), sql.Identifier(previous)))
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(target)))
