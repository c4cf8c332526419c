r"""The libpq password file: the only place this project reads passwords from.

Passwords never travel through run config, metadata or process arguments. Child
processes (pg_dump, pg_restore) get a private password file of their own, so the
lookup here reads the file exactly as libpq's ``passwordFromFile`` does: lines end at
``\n`` only (a password may hold any other line or paragraph separator, U+2028 or U+0085
among them) and lose trailing ``\r``; a line starting with ``#`` is a comment; the first
matching line wins; a field that is ``*`` (unescaped) matches anything; ``\`` escapes the
next character; the password ends at the first unescaped ``:``; and a socket connection
matches ``localhost``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from wehub_backup.errors import PasswordFileError
from wehub_backup.files import write_private_text


@dataclass(frozen=True)
class PassEntry:
    """One line to write: ``*`` in the first four fields matches anything."""

    host: str
    port: str
    dbname: str
    user: str
    password: str


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


def lookup_password(path: Path, host: str, port: int, dbname: str, user: str) -> str:
    """Return the password libpq would use for this connection, or explain why there is none."""
    wanted = (_pgpass_host(host), str(port), dbname, user)
    for line in _lines(path):
        password = _password_if_matching(line, wanted)
        if password is not None:
            if any("\udc80" <= char <= "\udcff" for char in password):
                raise PasswordFileError(f"the password for {user}@{host}:{port}/{dbname} in password file {path} "
                                        "is not UTF-8 text")
            return password
    raise PasswordFileError(
        f"no entry for {user}@{host}:{port}/{dbname} in password file {path} "
        f"(add a line host:port:database:user:password)"
    )


def write_private_passfile(path: Path, entries: list[PassEntry]) -> Path:
    """Write a mode-0600 password file for a child process (created private, never widened)."""
    lines = [":".join(_escape(field) for field in (e.host, e.port, e.dbname, e.user, e.password)) for e in entries]
    return write_private_text(path, "\n".join(lines) + "\n")


def _lines(path: Path) -> list[str]:
    """The file's lines as libpq reads them: split at ``\n`` alone, trailing ``\r`` removed, comments out."""
    check_permissions(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PasswordFileError(f"cannot read password file {path}: {error.strerror}") from None
    lines = (raw.rstrip(b"\r").decode("utf-8", "surrogateescape") for raw in data.split(b"\n"))
    return [line for line in lines if line and not line.startswith("#")]


def _password_if_matching(line: str, wanted: tuple[str, str, str, str]) -> str | None:
    """The line's password if its first four fields match ``wanted`` (libpq's ``pwdfMatchesString``:
    a field is a wildcard only as an unescaped ``*``)."""
    rest: str | None = line
    for token in wanted:
        if rest is None:
            return None
        if rest.startswith("*:"):
            rest = rest[2:]
            continue
        value, rest = _field(rest)
        rest = rest if value == token else None
    return None if rest is None else _field(rest)[0]


def _field(text: str) -> tuple[str, str | None]:
    """The first field of ``text``, unescaped, and what follows its unescaped ``:`` (None: no ``:``).

    A backslash takes the next character as it is; one at the very end stays.
    """
    value, escaped = [], False
    for at, char in enumerate(text):
        if escaped:
            value.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            return "".join(value), text[at + 1:]
        else:
            value.append(char)
    return "".join(value) + ("\\" if escaped else ""), None


def _pgpass_host(host: str) -> str:
    """libpq matches socket connections (empty host or a directory) against ``localhost``."""
    return "localhost" if not host or host.startswith("/") else host


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")
