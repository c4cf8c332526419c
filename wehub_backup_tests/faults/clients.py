"""An application's connection pool as the promote step meets it: sessions that come straight back."""

from __future__ import annotations

import threading
from types import TracebackType

import psycopg

from wehub_backup_tests.harness.cluster import PostgresCluster

_CURRENT_DATABASE_OID = "SELECT oid::bigint FROM pg_database WHERE datname = current_database()"


class ReconnectingPool:
    """Threads that each hold a session on ``database`` and open a new one, without pause,
    whenever theirs ends: a terminated session is replaced within milliseconds."""

    def __init__(self, cluster: PostgresCluster, database: str, size: int) -> None:
        self.connections = 0
        self.oids_seen: set[int] = set()  # the databases the sessions found under ``database``'s name
        self._cluster, self._database = cluster, database
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._serve, name=f"pool-{i}", daemon=True) for i in range(size)]

    def __enter__(self) -> ReconnectingPool:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                with self._cluster.connect(self._database) as conn:
                    with self._lock:
                        self.connections += 1
                    while not self._stop.is_set():
                        oid = conn.execute(_CURRENT_DATABASE_OID).fetchone()[0]
                        with self._lock:
                            self.oids_seen.add(oid)
                        self._stop.wait(0.01)
            except psycopg.Error:
                continue  # terminated, or the database was being renamed: straight back
