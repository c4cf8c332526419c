"""The run lock: one run per target database at a time, across processes and machines."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from wehub_backup.errors import ConcurrentRun, LockLost
from wehub_backup.pg.connection import error_line


def lock_name(name: str) -> str:
    """The advisory lock's text key: one lock per target (or migration source) database."""
    return f"wehub_backup/{name}"


def holds_advisory_lock(conn: psycopg.Connection, name: str) -> bool:
    """Whether this session holds ``name``'s lock (a bigint key shows as classid/objid, objsubid 1)."""
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        " AND granted AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0))",
        (lock_name(name),),
    ).fetchone()[0]


class TargetLock:
    """A session-level advisory lock on the VPS, one per target, held for a whole run.

    The lock lives as long as its connection: if the run's process dies, PostgreSQL
    releases it, so a crashed run never blocks the next one. The other way round, a session
    that ends under a live run (an idle timeout, a VPS restart, a cut connection) takes the
    lock with it, and a second run could start. So the session clears its idle timeouts and
    uses TCP keepalives (``ConnectionInfo.connect``), a thread checks every
    ``KEEPALIVE_SECONDS`` that the lock is still held on it, and ``on_lost`` is called the
    moment it is not; the swap itself runs on this session, after a last check inside its
    transaction.
    """

    KEEPALIVE_SECONDS = 2.0
    _held: dict[str, TargetLock] = {}

    def __init__(self, conn: psycopg.Connection, name: str, on_lost: Callable[[LockLost], None]) -> None:
        self.name = name
        self._conn = conn
        self._on_lost = on_lost
        self._using = threading.Lock()
        self._lost: LockLost | None = None
        self._released = threading.Event()
        self._keepalive = threading.Thread(target=self._keep_alive, name=f"lock-{name}", daemon=True)

    @classmethod
    def acquire(cls, run_id: str, conn: psycopg.Connection, name: str,
                on_lost: Callable[[LockLost], None] = lambda error: None) -> TargetLock:
        got = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (lock_name(name),)).fetchone()[0]
        if not got:
            conn.close()
            raise ConcurrentRun(f"another backup or migration run for {name} is running; this run changed nothing")
        lock = cls._held[run_id] = cls(conn, name, on_lost)
        lock._keepalive.start()
        return lock

    @classmethod
    def of(cls, run_id: str) -> TargetLock:
        """The lock ``run_id`` took; ``LockLost`` if it has none (it cannot change the VPS then)."""
        lock = cls._held.get(run_id)
        if lock is None:
            raise LockLost(f"run {run_id} holds no lock on the VPS; it changes nothing there")
        return lock

    @classmethod
    def holds(cls, run_id: str) -> bool:
        """Whether ``run_id`` still holds its lock, asked of the lock's session now."""
        lock = cls._held.get(run_id)
        return lock is not None and lock._probe() is None

    @classmethod
    def require_held(cls, run_id: str) -> None:
        """``LockLost`` if ``run_id`` took a lock and has lost it since."""
        lock = cls._held.get(run_id)
        if lock is not None and lock._lost is not None:
            raise lock._lost

    @classmethod
    def require_held_now(cls, run_id: str) -> None:
        """``LockLost`` unless ``run_id``'s lock session holds the lock now: asked of the session,
        for a change that must not wait for the keepalive's next look."""
        lock = cls.of(run_id)
        problem = lock._probe()
        if problem is not None:
            raise lock._mark_lost(problem)

    @classmethod
    def release(cls, run_id: str) -> None:
        lock = cls._held.pop(run_id, None)
        if lock is not None:
            lock._released.set()
            with lock._using:
                lock._conn.close()

    @contextmanager
    def session(self) -> Iterator[psycopg.Connection]:
        """The lock's own session for a change that must happen under the lock (the swap).

        The keepalive pauses meanwhile; a session that breaks in the block is the lock lost.
        """
        with self._using:
            if self._lost is not None:
                raise self._lost
            try:
                yield self._conn
            except psycopg.OperationalError as error:
                if self._conn.broken or self._conn.closed:
                    raise self._mark_lost(f"its VPS session ended ({error_line(error)})") from error
                raise

    def require_on_session(self, conn: psycopg.Connection) -> None:
        """Inside ``session``: ``LockLost`` unless the session still holds the lock."""
        if not holds_advisory_lock(conn, self.name):
            raise self._mark_lost("its VPS session no longer holds it")

    def _keep_alive(self) -> None:
        """Ask the session every few seconds; report the first time the lock is gone."""
        while not self._released.wait(self.KEEPALIVE_SECONDS):
            problem = self._probe()
            if problem is not None and not self._released.is_set():
                self._on_lost(self._mark_lost(problem))
                return

    def _probe(self) -> str | None:
        """None while the session holds the lock, else what happened to it."""
        if self._lost is not None:
            return str(self._lost)
        with self._using:
            if self._released.is_set():
                return "it was released"
            try:
                held = holds_advisory_lock(self._conn, self.name)
            except psycopg.Error as error:
                return f"its VPS session ended ({error_line(error)})"
        return None if held else "its VPS session no longer holds it"

    def _mark_lost(self, problem: str) -> LockLost:
        if self._lost is None:
            self._lost = LockLost(
                f"lost the run's lock on {self.name}: {problem}; another run may be working on {self.name} "
                "now, so this run stopped"
            )
        return self._lost
