"""Files and directories the project creates: explicit private modes, whatever the umask.

Directories are 0700 and files 0600 (the dump archive too: the client programs run with
umask 077), and a plain-text run log 0640: the service's group may read it, as
``deploy/install.sh`` creates it, and it holds no secret. Dagster creates its own files
(SQLite storage, compute logs) with the process's umask, so the command and the code
location make that umask private first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

PRIVATE_FILE_MODE = 0o600
RUN_LOG_MODE = 0o640
PRIVATE_DIRECTORY_MODE = 0o700
PRIVATE_UMASK = 0o077


def private_umask() -> None:
    """Files the process creates without an explicit mode (Dagster's storage and logs) are its owner's alone."""
    os.umask(PRIVATE_UMASK)


def open_private(path: Path, mode: int = PRIVATE_FILE_MODE, *, append: bool = False) -> BinaryIO:
    """Open ``path`` for writing; a file this creates gets ``mode`` (less the umask: never more)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, mode), "ab" if append else "wb")


def write_private_text(path: Path, text: str, errors: str = "strict") -> Path:
    """``Path.write_text`` for a file of the run's own: created mode 0600."""
    with open_private(path) as handle:
        handle.write(text.encode("utf-8", errors))
    return path


def make_directories(path: Path) -> None:
    """``mkdir -p`` whose every new directory is 0700: ``Path.mkdir(parents=True)`` gives the
    parents it creates 0777 less the umask, which under ``umask 000`` is everyone's."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIRECTORY_MODE, exist_ok=True)
