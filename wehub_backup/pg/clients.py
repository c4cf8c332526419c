"""The PostgreSQL client programs: finding the right version.

A ``pg_dump`` older than the server refuses to run, and a ``pg_restore`` older than the
archive cannot read it, so the tools are chosen as a set from one binary directory.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wehub_backup.config import child_environment, pg_bindirs
from wehub_backup.errors import VersionMismatch

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")

# Session settings pg_restore writes into a script's preamble, by the server version that
# introduced them: an older server rejects them.
_SCRIPT_SETTINGS_SINCE = {b"transaction_timeout": 17}
CLIENT_PROGRAMS = ("pg_dump", "pg_restore", "psql", "vacuumdb")


@dataclass(frozen=True)
class PgClient:
    """One binary directory's pg_dump, pg_restore and psql, of one major version."""

    bindir: Path
    major: int
    version: str

    def program(self, name: str) -> str:
        return str(self.bindir / name)


def candidate_bindirs(extra: Sequence[Path] = ()) -> list[Path]:
    """Directories that may hold client programs, most specific first."""
    dirs = list(extra)
    dirs += pg_bindirs()
    dirs += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    dirs += [Path(p) for p in sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)]
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(os.path.realpath(on_path)).parent)
    unique: list[Path] = []
    for directory in dirs:
        if directory not in unique:
            unique.append(directory)
    return unique


def installed_clients(extra: Sequence[Path] = ()) -> list[PgClient]:
    """Every complete client set found, newest major first."""
    clients = []
    for bindir in candidate_bindirs(extra):
        if not all((bindir / name).is_file() for name in CLIENT_PROGRAMS):
            continue
        version = program_version(bindir / "pg_dump")
        if version:
            clients.append(PgClient(bindir, version[0], version[1]))
    return sorted(clients, key=lambda client: client.major, reverse=True)


def program_version(program: Path) -> tuple[int, str] | None:
    """``(major, "15.18")`` from ``program --version``, or None if it does not run."""
    try:
        output = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=20,
                                env=child_environment()).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(output)
    if not match:
        return None
    return int(match.group(1)), output.split("(PostgreSQL)")[1].split()[0]


def choose_client(server_major: int, extra: Sequence[Path] = (), purpose: str = "dump") -> PgClient:
    """The newest installed client set, provided it is at least as new as the server."""
    return newest_sufficient(installed_clients(extra), server_major, purpose)


def newest_sufficient(clients: list[PgClient], server_major: int, purpose: str = "dump") -> PgClient:
    """The first of ``clients`` (newest first), provided it is at least as new as the server."""
    if not clients:
        raise VersionMismatch(
            "no pg_dump/pg_restore/psql found (install postgresql-client, or set WEHUB_PG_BINDIRS)"
        )
    newest = clients[0]
    if newest.major < server_major:
        found = ", ".join(f"{c.version} in {c.bindir}" for c in clients)
        raise VersionMismatch(
            f"server version mismatch: the server is PostgreSQL {server_major} but the newest pg_dump here is "
            f"{newest.version}; to {purpose} it install postgresql-client-{server_major} or newer "
            f"(or set WEHUB_PG_BINDIRS). Found: {found}"
        )
    return newest


def session_options(settings: dict[str, str]) -> dict[str, str]:
    """``PGOPTIONS`` giving a tool's sessions these settings (for a server reached directly:
    poolers reject or drop startup options)."""
    if not settings:
        return {}
    escaped = (value.replace("\\", "\\\\").replace(" ", "\\ ") for value in settings.values())
    return {"PGOPTIONS": " ".join(f"-c {name}={value}" for name, value in zip(settings, escaped))}


def settings_unknown_to(server_major: int) -> tuple[bytes, ...]:
    """Settings a newer pg_restore writes into a script's preamble that ``server_major`` rejects."""
    return tuple(setting for setting, since in _SCRIPT_SETTINGS_SINCE.items() if server_major < since)
