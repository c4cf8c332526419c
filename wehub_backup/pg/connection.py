"""Where a database is and how this project logs in to it; never the password itself.

Each child gets its connection through the environment and its password through a private
password file: nothing secret is ever in an argument list, and nothing of this process's
environment but what ``config.child_environment`` lets through.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg

from wehub_backup.config import DEFAULT_LOCK_TIMEOUT_S, DEFAULT_STALL_TIMEOUT_S, child_environment
from wehub_backup.pg.passfile import PassEntry, lookup_password, write_private_passfile
from wehub_backup.threads import repeated_beside

APPLICATION_NAME = "wehub_backup"
# Session timeouts a login's settings may set, and the server versions (server_version_num) that have them.
IDLE_SESSION_TIMEOUT_SINCE = 140000
TRANSACTION_TIMEOUT_SINCE = 170000
# A dead peer is noticed within about a minute: probes after 30 s idle, every 10 s, 3 lost;
# data unacknowledged for 60 s ends the connection too.
TCP_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
                  "tcp_user_timeout": 60000}


@dataclass(frozen=True)
class ConnectionInfo:
    """Where a database is and who logs in; never the password itself.

    ``hostaddr``/``lookup_port`` let a connection go through the local byte-counting relay
    while TLS still verifies the real host name and the password is found under the real port.
    """

    host: str
    port: int
    user: str
    dbname: str
    sslmode: str
    passfile: Path
    hostaddr: str | None = None
    lookup_port: int | None = None
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S

    def describe(self, dbname: str | None = None) -> str:
        """A log-safe name for the connection."""
        return f"{self.user}@{self.host}:{self.lookup_port or self.port}/{dbname or self.dbname}"

    def password(self) -> str:
        """The password from the password file line for the configured database.

        The same login also opens the server's other databases (staging, maintenance), as
        the operator wrote one line per server, as the plan's ``.pgpass`` has it.
        """
        return lookup_password(self.passfile, self.host, self.lookup_port or self.port, self.dbname, self.user)

    def via_relay(self, relay_port: int) -> ConnectionInfo:
        """The same server reached through a relay on this machine's loopback."""
        return replace(self, hostaddr="127.0.0.1", port=relay_port, lookup_port=self.lookup_port or self.port)

    def connect(self, dbname: str | None = None, *, autocommit: bool = True, connect_timeout: int = 15) -> psycopg.Connection:
        """Open a psycopg connection with the password from the password file.

        The session clears statement, transaction and idle timeouts (``session_timeouts``):
        Supabase sets a 2-minute ``statement_timeout`` for ``postgres`` that would cancel long
        verification queries, and a login's ``idle_session_timeout`` would end the session holding
        the run's lock.
        A lock wait, though, ends after ``lock_timeout_s``: a session holding a table's
        ACCESS EXCLUSIVE lock would otherwise hold the run for ever. TCP keepalives and a user
        timeout bound every wait on a peer that went away.
        """
        params: dict[str, Any] = dict(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=dbname or self.dbname,
            sslmode=self.sslmode,
            password=self.password(),
            application_name=APPLICATION_NAME,
            connect_timeout=connect_timeout,
            **TCP_KEEPALIVES,
        )
        if self.hostaddr:
            params["hostaddr"] = self.hostaddr
        conn = psycopg.connect(autocommit=autocommit, **params)
        for statement in session_timeouts(conn.info.server_version, self.lock_timeout_s):
            conn.execute(statement)  # type: ignore[arg-type]
        if not autocommit:
            conn.commit()
        return conn

    @contextmanager
    def tool_environment(self, private_passfile: Path, dbname: str | None = None) -> Iterator[dict[str, str]]:
        """``libpq_environment`` for the length of a block: the password file goes with it."""
        try:
            yield self.libpq_environment(private_passfile, dbname)
        finally:
            private_passfile.unlink(missing_ok=True)

    def libpq_environment(self, private_passfile: Path, dbname: str | None = None) -> dict[str, str]:
        """Environment for pg_dump/pg_restore/psql: connection by variables, password by a private file."""
        password = self.password()
        write_private_passfile(
            private_passfile, [PassEntry("*", str(self.port), "*", self.user, password)]
        )
        settings = dict(
            PGHOST=self.host,
            PGPORT=str(self.port),
            PGUSER=self.user,
            PGDATABASE=dbname or self.dbname,
            PGSSLMODE=self.sslmode,
            PGPASSFILE=str(private_passfile),
            PGAPPNAME=APPLICATION_NAME,
            PGCONNECT_TIMEOUT="15",
        )
        if self.hostaddr:
            settings["PGHOSTADDR"] = self.hostaddr
        return child_environment(settings)


def session_timeouts(server_version: int, lock_timeout_s: float) -> list[str]:
    """What every session of the project sets first: no statement, transaction or idle timeout of
    the login's (Supabase gives ``postgres`` a 2-minute ``statement_timeout``; a run's snapshot is
    one long transaction), and a lock wait bounded by ``lock_timeout_s``."""
    statements = ["SET statement_timeout = 0", "SET idle_in_transaction_session_timeout = 0",
                  f"SET lock_timeout = {max(1, round(lock_timeout_s * 1000))}"]
    if server_version >= IDLE_SESSION_TIMEOUT_SINCE:
        statements.append("SET idle_session_timeout = 0")
    if server_version >= TRANSACTION_TIMEOUT_SINCE:
        statements.append("SET transaction_timeout = 0")
    return statements


@contextmanager
def cancelled_when_set(conn: psycopg.Connection, stopping: threading.Event, poll_s: float = 0.2) -> Iterator[None]:
    """Cancel ``conn``'s statement once ``stopping`` is set (looked at every ``poll_s``): a statement
    reading a large table stops with the work it is part of, instead of holding up its end."""
    def cancel_once_stopping() -> bool:
        if not stopping.is_set():
            return True
        conn.cancel_safe(timeout=poll_s * 50)
        return False

    with repeated_beside(poll_s, cancel_once_stopping, "cancel-when-stopped"):
        yield


def is_local_host(host: str) -> bool:
    """Loopback addresses, ``localhost`` and socket directories need no TLS by default."""
    if not host or host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MAINTENANCE_DATABASE = "postgres"


def error_line(error: BaseException) -> str:
    """The first meaningful line of an error (psycopg's are often several lines long).

    A failed connection lists one line per address tried, each followed by libpq's hint
    ("Is the server running on that host...?"); the last attempt's own line is the cause.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    if text.startswith("connection failed:"):
        text = [line for line in lines if " failed: " in line][-1].removeprefix("connection failed: ")
    return text
