"""Where a password must never turn up: files the runs wrote, and process argument lists.

Password files are the one place passwords belong (the operator's, the harness's, the private
copies a run hands to pg_dump); every file with ``pgpass`` in its name is one of those.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

PASSWORD_FILE_MARK = "pgpass"


def files_with_secrets(roots: Iterable[Path], secrets: Iterable[str], pattern: str = "*",
                       *, password_files_too: bool = False) -> list[str]:
    """Every regular file under ``roots`` (other than password files, unless ``password_files_too``)
    holding one of ``secrets``."""
    needles = [secret.encode() for secret in secrets]
    found = []
    for root in roots:
        paths = [root] if root.is_file() else (root.rglob(pattern) if root.is_dir() else [])
        for path in paths:
            skipped = PASSWORD_FILE_MARK in path.name and not password_files_too
            if skipped or path.is_symlink() or not path.is_file():
                continue
            try:
                content = path.read_bytes()
            except OSError:
                continue
            found += [str(path) for needle in needles if needle in content]
    return found


class ArgumentListSampler:
    """Reads every process's argument list every ``interval`` seconds, in a daemon thread.

    A process that lives shorter than the interval can be missed; pg_dump, pg_restore and psql
    of even the smallest run live longer.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.seen: set[str] = set()
        self.passes = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="argv-sampler", daemon=True)

    def start(self) -> ArgumentListSampler:
        self._thread.start()
        return self

    def __enter__(self) -> ArgumentListSampler:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def holding(self, secrets: Iterable[str]) -> list[str]:
        """Sampled argument lists that contain one of ``secrets``."""
        return [argv for argv in list(self.seen) for secret in secrets if secret in argv]

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        with open(os.path.join(entry.path, "cmdline"), "rb") as handle:
                            self.seen.add(handle.read().replace(b"\0", b" ").decode("utf-8", "replace"))
                    except OSError:
                        continue
            self.passes += 1
