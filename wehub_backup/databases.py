"""Database-level operations on the VPS: names, staging, the atomic swap, and the run lock.

The target is never dropped or written in place. A copy is restored into
``<target>__staging``, verified, and only then swapped in with two renames in one
transaction, keeping the old copy as ``<target>__previous``. A crash at any moment
leaves either the old state or the new one.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Literal

import psycopg
from psycopg import sql

STAGING_SUFFIX = "__staging"
PREVIOUS_SUFFIX = "__previous"
RESERVED_DATABASES = ("postgres", "template0", "template1")
MAX_TARGET_LENGTH = 63 - len(PREVIOUS_SUFFIX)
_TARGET_NAME = re.compile(r"[a-z_][a-z0-9_]*")

SessionPolicy = Literal["wait", "terminate"]


class InvalidTarget(ValueError):
    """The configured target database name is refused before anything is touched."""


class TargetBusy(RuntimeError):
    """Sessions kept the target open, or another run holds it."""


@dataclass(frozen=True)
class PromoteResult:
    previous_kept: bool
    sessions_terminated: int
    waited_seconds: float


def staging_name(target: str) -> str:
    return target + STAGING_SUFFIX


def previous_name(target: str) -> str:
    return target + PREVIOUS_SUFFIX


def dagster_storage_database() -> str:
    """The database Dagster keeps its own runs in, which a backup must never replace."""
    return os.environ.get("DAGSTER_PG_DB", "dagster")


def validate_target_name(name: str, *, forbidden: dict[str, str] | None = None) -> str:
    """Return ``name`` if it is a safe target, else raise ``InvalidTarget`` with a one-line reason.

    Only lower-case ASCII identifiers are accepted: they need no quoting anywhere (psql,
    pg_hba.conf, connection strings, an operator's shell), and leave room for the suffixes.
    """
    shown = repr(name)
    if not name:
        raise InvalidTarget("invalid target database '': the name is empty")
    if len(name.encode()) > MAX_TARGET_LENGTH:
        raise InvalidTarget(
            f"invalid target database {shown[:40]}...: longer than {MAX_TARGET_LENGTH} bytes "
            f"(it needs room for '{PREVIOUS_SUFFIX}')"
        )
    if not _TARGET_NAME.fullmatch(name):
        raise InvalidTarget(
            f"invalid target database {shown}: use lower-case letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    if name in RESERVED_DATABASES:
        raise InvalidTarget(f"invalid target database {shown}: {name} is a system database")
    if name.endswith((STAGING_SUFFIX, PREVIOUS_SUFFIX)):
        raise InvalidTarget(f"invalid target database {shown}: the suffixes {STAGING_SUFFIX}/{PREVIOUS_SUFFIX} are reserved")
    for other, why in (forbidden or {}).items():
        if name == other:
            raise InvalidTarget(f"invalid target database {shown}: it is {why}")
    return name


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
            raise TargetBusy(f"another backup or migration run for {target} is running; this run changed nothing")
        cls._held[run_id] = conn

    @classmethod
    def holds(cls, run_id: str) -> bool:
        return run_id in cls._held

    @classmethod
    def release(cls, run_id: str) -> None:
        conn = cls._held.pop(run_id, None)
        if conn is not None:
            conn.close()
