"""The libpq password file: the only place this project reads passwords from.

Passwords never travel through run config, metadata or process arguments. Child
processes (pg_dump, pg_restore) get a private password file of their own, so the
lookup rules here follow libpq's exactly: first matching line wins, ``*`` matches
anything, ``\\:`` and ``\\\\`` escape, and a socket connection matches ``localhost``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from wehub_backup.errors import PasswordFileError


@dataclass(frozen=True)
class PassEntry:
    host: str
    port: str
    dbname: str
    user: str
    password: str

    def matches(self, host: str, port: int, dbname: str, user: str) -> bool:
        wanted = (_pgpass_host(host), str(port), dbname, user)
        fields = (self.host, self.port, self.dbname, self.user)
        return all(field == "*" or field == value for field, value in zip(fields, wanted))


def default_passfile() -> Path:
    """Where libpq looks: ``$PGPASSFILE``, else ``~/.pgpass``."""
    return Path(os.environ.get("PGPASSFILE") or Path.home() / ".pgpass")


def check_permissions(path: Path) -> None:
    """Refuse a password file that group or others can read, as libpq itself does."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise PasswordFileError(f"password file {path} does not exist (set PGPASSFILE or create ~/.pgpass)") from None
    if not stat.S_ISREG(info.st_mode):
        raise PasswordFileError(f"password file {path} is not a plain file")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PasswordFileError(
            f"password file {path} has group or world access (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run: chmod 600 {path}"
        )


def read_entries(path: Path) -> list[PassEntry]:
    """Parse a password file after checking its permissions."""
    check_permissions(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PasswordFileError(f"cannot read password file {path}: {error.strerror}") from None
    entries = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = _split_fields(line)
        if len(fields) == 5:
            entries.append(PassEntry(*fields))
    return entries


def lookup_password(path: Path, host: str, port: int, dbname: str, user: str) -> str:
    """Return the password libpq would use for this connection, or explain why there is none."""
    for entry in read_entries(path):
        if entry.matches(host, port, dbname, user):
            return entry.password
    raise PasswordFileError(
        f"no entry for {user}@{host}:{port}/{dbname} in password file {path} "
        f"(add a line host:port:database:user:password)"
    )


def write_private_passfile(path: Path, entries: list[PassEntry]) -> Path:
    """Write a mode-0600 password file for a child process (created private, never widened)."""
    lines = [":".join(_escape(field) for field in (e.host, e.port, e.dbname, e.user, e.password)) for e in entries]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def _pgpass_host(host: str) -> str:
    """libpq matches socket connections (empty host or a directory) against ``localhost``."""
    return "localhost" if not host or host.startswith("/") else host


def _split_fields(line: str) -> list[str]:
    fields, current, escaped = [], [], False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":" and len(fields) < 4:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")
