"""Promote: swap the verified staging copy in, keeping the old copy as ``<target>__previous``.

The renames commit together: ``__previous`` -> ``__retired``, the target -> ``__previous``,
staging -> the target, and the new copy gets its verified mark. ``__retired`` is dropped only
after the commit (DROP DATABASE cannot run in a transaction). A crash at any moment therefore
leaves the old state or the new one; at worst a marked ``__retired`` that the next run drops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import psycopg

from wehub_backup.backup.increment import target_oid
from wehub_backup.backup.plan import BackupPlan
from wehub_backup.backup.verify import VerificationResult
from wehub_backup.errors import TargetBusy
from wehub_backup.pg.connection import APPLICATION_NAME, MAINTENANCE_DATABASE, ConnectionInfo
from wehub_backup.pg.databases import (
    Blocker,
    describe_blockers,
    drop_database,
    find_blockers,
    rename_database,
    sessions_of_application,
    terminate_sessions,
)
from wehub_backup.preflight import connect_or_explain
from wehub_backup.run.locks import TargetLock
from wehub_backup.run.manifest import chunk_record_path, record_chunks, record_copy
from wehub_backup.run.marks import Mark, MarkState, check_replaceable, read_marks, write_mark
from wehub_backup.run.targets import generation_names, previous_name, retired_name, staging_name
from wehub_backup.threads import run_beside

SessionPolicy = Literal["wait", "terminate"]
# How often terminate mode ends new sessions while the swap waits for a database to empty.
TERMINATE_INTERVAL_SECONDS = 0.02
# How long the run's own sessions on the swap's databases (verification's and the load's on staging,
# an incremental load's reads of the current copy) get to finish exiting after their steps closed
# them; a session still there after that is not one that is closing.
OWN_SESSIONS_END_SECONDS = 10.0
OWN_SESSIONS_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class PromoteResult:
    previous_kept: bool
    sessions_terminated: int
    waited_seconds: float
    retired_left: str | None = None  # the oldest generation, when dropping it after the swap failed


def promote(plan: BackupPlan, vps: ConnectionInfo, lock: TargetLock, policy: SessionPolicy,
            timeout_seconds: float, schema_digest: str = "", verified: VerificationResult | None = None
            ) -> PromoteResult:
    """The swap, on the session that holds the run's lock and checked on it inside the swap's
    transaction: a run whose lock went (and another run may have taken it) cannot swap. The new
    copy's record follows, for the incremental runs that will build on it."""
    result = promote_copy(plan.target, plan.copy_of, vps, lock, policy, timeout_seconds, adopt=plan.adopt)
    if plan.manifest_file is not None:
        oid = target_oid(vps, plan.target)
        if oid is not None:
            if verified is not None:
                record_chunks(chunk_record_path(plan.manifest_file), verified.bounds, verified.fingerprint)
            record_copy(plan.manifest_file, plan.copy_of, oid, plan.mode, schema_digest,
                        plan.base.manifest if plan.base else None)
    return result


def promote_copy(target: str, copy_of: str, vps: ConnectionInfo, lock: TargetLock, policy: SessionPolicy,
                 timeout_seconds: float, *, adopt: bool = False) -> PromoteResult:
    """``promote`` for any verified staging copy of ``copy_of`` (a backup's, or a restored archive's)."""
    with lock.session() as session:
        return promote_staging(session, lambda: connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE),
                               target, copy_of, adopt=adopt, policy=policy,
                               timeout_seconds=timeout_seconds, before_swap=lock.require_on_session)


@dataclass
class _Swap:
    """The renames of one promote, decided from what exists when it starts."""

    target: str
    copy: Mark
    target_exists: bool
    retiring: bool  # there is a __previous to rename aside (only when there is a target to take its place)
    adopted: list[str]
    before: Callable[[psycopg.Connection], None]  # first in the swap's transaction (the lock's check)
    terminated: set[tuple[int, datetime]] = field(default_factory=set)

    @property
    def touched(self) -> list[str]:
        """The databases the swap renames, each of which must be free of sessions."""
        names = [staging_name(self.target)]
        if self.target_exists:
            names.append(self.target)
        if self.retiring:
            names.append(previous_name(self.target))
        return names


def promote_staging(
    session: psycopg.Connection,
    connect: Callable[[], psycopg.Connection],
    target: str,
    source: str,
    *,
    adopt: bool = False,
    policy: SessionPolicy = "wait",
    timeout_seconds: float = 300.0,
    poll_seconds: float = 0.5,
    before_swap: Callable[[psycopg.Connection], None] = lambda conn: None,
    own_sessions_seconds: float = OWN_SESSIONS_END_SECONDS,
) -> PromoteResult:
    """Swap the verified staging database in as ``target``, keeping the old one as ``__previous``.

    Every database the swap renames (staging, the target, ``__previous``) must be free of
    sessions: with ``wait`` they are given ``timeout_seconds`` to leave, with ``terminate``
    they are ended while the swap runs. Nothing is dropped before the renames commit, so a
    promote that gives up, fails or dies keeps both generations as they were. The swap runs on
    ``session`` (the run lock's), ``before_swap`` first in its transaction; ``connect`` opens
    the session that watches for (and in terminate mode ends) others. First, the project's own
    sessions on those databases get ``own_sessions_seconds`` to finish exiting: they are neither
    waited for as an application's nor ended and counted as one.
    """
    started = time.monotonic()
    with connect() as watcher:
        swap = _plan_swap(session, target, source, adopt, before_swap)
        _wait_for_own_sessions_to_end(watcher, swap.touched, own_sessions_seconds)
        busy = _Busy(watcher, swap.touched, [session.info.backend_pid, watcher.info.backend_pid])
        while not _try_swap(session, watcher, swap, policy, busy, timeout_seconds - (time.monotonic() - started)):
            if time.monotonic() - started > timeout_seconds:
                raise TargetBusy(_busy_message(busy.held(), policy, timeout_seconds))
            time.sleep(poll_seconds)
        retired_left = _drop_retired(session, target) if swap.retiring else None
    return PromoteResult(swap.target_exists, len(swap.terminated), time.monotonic() - started, retired_left)


def _wait_for_own_sessions_to_end(watcher: psycopg.Connection, names: list[str], bound_seconds: float) -> None:
    """Let the backends of the sessions the run's steps closed on ``names`` exit, within a bound.

    One still connected after the bound is not closing: a step's child may still be writing
    into the copy that was verified, or reading the current copy, so nothing is swapped.
    """
    deadline = time.monotonic() + bound_seconds
    while sessions := sessions_of_application(watcher, names, APPLICATION_NAME):
        if time.monotonic() >= deadline:
            held = ", ".join(f"pid {pid} on {database}" for database, pid in sessions)
            raise TargetBusy(
                f"{len(sessions)} {APPLICATION_NAME} session(s) ({held}) were still connected "
                f"{bound_seconds:.0f}s after the steps that use them had ended; the verified copy was not swapped in "
                "and no database was renamed or dropped (a pg_restore or psql of the run may still be running: "
                "end it, then run the job again)")
        time.sleep(OWN_SESSIONS_POLL_SECONDS)


def _plan_swap(conn: psycopg.Connection, target: str, source: str, adopt: bool,
               before: Callable[[psycopg.Connection], None]) -> _Swap:
    """Check the marks again (an hour may have passed since the plan step) and decide the renames."""
    adopted = check_replaceable(conn, target, source, adopt)
    existing = read_marks(conn, generation_names(target))
    previous = previous_name(target)
    return _Swap(target, Mark(MarkState.VERIFIED, source), target in existing,
                 target in existing and previous in existing, [name for name in adopted if name in (target, previous)],
                 before)


@dataclass
class _Busy:
    """What last kept the swap's databases busy, for the message if the promote gives up."""

    conn: psycopg.Connection
    names: list[str]
    ours: list[int]
    blockers: list[Blocker] = field(default_factory=list)
    error: str = ""

    def check(self) -> bool:
        """Whether anything blocks the swap now."""
        current = find_blockers(self.conn, self.names, self.ours)
        self.blockers = current or self.blockers
        return bool(current)

    def failed(self, error: psycopg.Error) -> None:
        self.error = str(error).splitlines()[0]
        self.check()

    def held(self) -> str:
        return describe_blockers(self.blockers) or f"the swap was held up ({self.error})"


def _try_swap(conn: psycopg.Connection, watcher: psycopg.Connection, swap: _Swap, policy: SessionPolicy,
              busy: _Busy, remaining_seconds: float) -> bool:
    """Whether the swap went through; ``wait`` does not try while anything blocks it."""
    if busy.check() and policy == "wait":
        return False
    try:
        _run_swap(conn, watcher, swap, policy, remaining_seconds)
    except (psycopg.errors.ObjectInUse, psycopg.errors.LockNotAvailable) as error:
        busy.failed(error)
        return False
    return True


def _run_swap(conn: psycopg.Connection, watcher: psycopg.Connection, swap: _Swap, policy: SessionPolicy,
              remaining_seconds: float) -> None:
    """One attempt at the swap; in terminate mode, sessions on its databases are ended meanwhile.

    Each rename takes the renamed database's lock and holds it to the commit; a new session
    waits for that lock before it counts as connected, and the rename gives the sessions it
    finds 5 seconds to leave. So sessions ended during those seconds cannot be replaced, however
    fast the application reconnects, and nothing has to be switched off and on again (an
    ``ALLOW_CONNECTIONS false`` would have to be committed first, and a crash before it was
    undone would leave the database refusing every connection).
    """
    lock_timeout = f"{max(1000, int(remaining_seconds * 1000))}ms"
    if policy == "wait":
        _swap(conn, swap, lock_timeout)
        return
    done = threading.Event()

    def swap_then_signal() -> None:
        try:
            _swap(conn, swap, lock_timeout)
        finally:
            done.set()

    def terminate_until_done() -> None:
        while True:
            swap.terminated.update(terminate_sessions(watcher, swap.touched))
            if done.wait(TERMINATE_INTERVAL_SECONDS):
                return

    run_beside(swap_then_signal, terminate_until_done, "promote-swap")


def _swap(conn: psycopg.Connection, swap: _Swap, lock_timeout: str) -> None:
    """The renames, and the marks that go with them, in one transaction."""
    target, staging, previous = swap.target, staging_name(swap.target), previous_name(swap.target)
    with conn.transaction():
        swap.before(conn)
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout,))
        for name in swap.adopted:
            write_mark(conn, name, Mark(MarkState.ADOPTED, swap.copy.source))
        if swap.retiring:
            rename_database(conn, previous, retired_name(target))
        if swap.target_exists:
            rename_database(conn, target, previous)
        rename_database(conn, staging, target)
        write_mark(conn, target, swap.copy)


def _drop_retired(conn: psycopg.Connection, target: str) -> str | None:
    """Drop the generation the swap renamed aside; if that fails, the next run drops it (it is marked)."""
    try:
        drop_database(conn, retired_name(target))
    except psycopg.Error:
        return retired_name(target)
    return None


def _busy_message(held: str, policy: SessionPolicy, timeout_seconds: float) -> str:
    """Why the swap gave up (what held the databases), with what to do in the mode that is set."""
    if policy == "wait":
        waited = f"after {timeout_seconds:.0f}s"
        advice = "end those sessions, or set on_connected_sessions: terminate"
    else:
        waited = f"after {timeout_seconds:.0f}s of terminating sessions"
        advice = ("terminating sessions did not clear it: end a prepared transaction or a lock held from "
                  "another database by hand, or raise connected_sessions_timeout_seconds")
    return (f"{held} {waited}; the verified copy was not swapped in and no database was renamed or dropped "
            f"({advice})")
