"""Connection and host settings, as Dagster resources read from the environment at run time.

The variable names are the ones the original shell scripts used (``SUPABASE_DB_*``,
``LOCAL_DB_*``), so an operator who knows the plan recognises them. Passwords are not
settings: they live only in the libpq password file (``PGPASSFILE``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import dagster as dg
import psycopg

from wehub_backup import pgpass

APPLICATION_NAME = "wehub_backup"
TRANSACTION_POOLER_PORT = 6543


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

    def describe(self, dbname: str | None = None) -> str:
        """A log-safe name for the connection."""
        return f"{self.user}@{self.host}:{self.lookup_port or self.port}/{dbname or self.dbname}"

    def password(self) -> str:
        """The password from the password file line for the configured database.

        The same login also opens the server's other databases (staging, maintenance), as
        the operator wrote one line per server, as the plan's ``.pgpass`` has it.
        """
        return pgpass.lookup_password(self.passfile, self.host, self.lookup_port or self.port, self.dbname, self.user)

    def via_relay(self, relay_port: int) -> ConnectionInfo:
        """The same server reached through a relay on this machine's loopback."""
        return replace(self, hostaddr="127.0.0.1", port=relay_port, lookup_port=self.lookup_port or self.port)

    def connect(self, dbname: str | None = None, *, autocommit: bool = True, connect_timeout: int = 15) -> psycopg.Connection:
        """Open a psycopg connection with the password from the password file.

        The session clears statement and idle timeouts: Supabase sets a 2-minute
        ``statement_timeout`` for ``postgres`` that would cancel long verification queries.
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
        )
        if self.hostaddr:
            params["hostaddr"] = self.hostaddr
        conn = psycopg.connect(autocommit=autocommit, **params)
        conn.execute("SET statement_timeout = 0")
        conn.execute("SET idle_in_transaction_session_timeout = 0")
        conn.execute("SET lock_timeout = 0")
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
        pgpass.write_private_passfile(
            private_passfile, [pgpass.PassEntry("*", str(self.port), "*", self.user, password)]
        )
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(
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
            env["PGHOSTADDR"] = self.hostaddr
        return env


def is_local_host(host: str) -> bool:
    """Loopback addresses, ``localhost`` and socket directories need no TLS by default."""
    if not host or host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PostgresDatabase(dg.ConfigurableResource):
    """A PostgreSQL database this project reads from or writes to (Supabase or the VPS)."""

    host: str = "localhost"
    port: int = 5432
    user: str
    dbname: str
    sslmode: str = ""
    passfile: str = ""

    def connection_info(self) -> ConnectionInfo:
        """Resolve defaults: TLS is required for any non-local host unless set explicitly."""
        sslmode = self.sslmode or ("prefer" if is_local_host(self.host) else "require")
        passfile = Path(self.passfile) if self.passfile else pgpass.default_passfile()
        return ConnectionInfo(self.host, self.port, self.user, self.dbname, sslmode, passfile)


class BackupWorkspace(dg.ConfigurableResource):
    """Where working files and the plain-text run logs go, and how child processes run."""

    backup_dir: str = "/opt/supabase_backups"
    backup_log: str = "/var/log/supabase_backup.log"
    migration_log: str = "/var/log/supabase_migration.log"
    pg_bindirs: str = ""
    low_priority: bool = True

    def extra_bindirs(self) -> list[Path]:
        return [Path(entry) for entry in self.pg_bindirs.split(":") if entry]


def env_or_default(name: str, default: Any) -> Any:
    """``dg.EnvVar`` when the variable is set (read at run time, shown by name in the UI), else the default."""
    if name not in os.environ:
        return default
    return dg.EnvVar.int(name) if isinstance(default, int) and not isinstance(default, bool) else dg.EnvVar(name)


class DatabaseVariables(NamedTuple):
    """The environment variables that place one database (the plan's names, greppable as written)."""

    host: str
    port: str
    user: str
    name: str
    sslmode: str


SUPABASE_VARIABLES = DatabaseVariables(
    "SUPABASE_DB_HOST", "SUPABASE_DB_PORT", "SUPABASE_DB_USER", "SUPABASE_DB_NAME", "SUPABASE_DB_SSLMODE")
VPS_VARIABLES = DatabaseVariables("LOCAL_DB_HOST", "LOCAL_DB_PORT", "LOCAL_DB_USER", "LOCAL_DB_NAME", "LOCAL_DB_SSLMODE")


def database_from_env(variables: DatabaseVariables, *, host: str | None, user: str, dbname: str) -> PostgresDatabase:
    """A database resource bound to ``variables``; ``host=None`` makes the host variable required."""
    return PostgresDatabase(
        host=dg.EnvVar(variables.host) if host is None else env_or_default(variables.host, host),
        port=env_or_default(variables.port, 5432),
        user=env_or_default(variables.user, user),
        dbname=env_or_default(variables.name, dbname),
        sslmode=env_or_default(variables.sslmode, ""),
        passfile=env_or_default("PGPASSFILE", ""),
    )


def supabase_database_from_env() -> PostgresDatabase:
    return database_from_env(SUPABASE_VARIABLES, host=None, user="postgres", dbname="postgres")


def vps_database_from_env() -> PostgresDatabase:
    return database_from_env(VPS_VARIABLES, host="localhost", user="postgres", dbname="wehub")


def backup_workspace_from_env() -> BackupWorkspace:
    return BackupWorkspace(
        backup_dir=env_or_default("WEHUB_BACKUP_DIR", "/opt/supabase_backups"),
        backup_log=env_or_default("WEHUB_BACKUP_LOG", "/var/log/supabase_backup.log"),
        migration_log=env_or_default("WEHUB_MIGRATION_LOG", "/var/log/supabase_migration.log"),
        pg_bindirs=env_or_default("WEHUB_PG_BINDIRS", ""),
    )
