"""Where a password must never turn up: files the runs wrote, process argument lists, and the
environments of the client programs a run starts.

Password files are the one place passwords belong (the operator's, the harness's, the private
copies a run hands to pg_dump); every file with ``pgpass`` in its name is one of those.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

from wehub_backup_tests.faults.process import command_line, descendants

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


class _Sampler:
    """Takes a look at the machine's processes every ``interval`` seconds, in a daemon thread.

    A process that lives shorter than the interval can be missed; pg_dump, pg_restore and psql
    of even the smallest run live longer.
    """

    def __init__(self, interval: float) -> None:
        self.passes = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name=type(self).__name__, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._look()
            self.passes += 1

    def _look(self) -> None:
        raise NotImplementedError


class ArgumentListSampler(_Sampler):
    """Every process's argument list."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(interval)
        self.seen: set[str] = set()

    def holding(self, secrets: Iterable[str]) -> list[str]:
        """Sampled argument lists that contain one of ``secrets``."""
        return [argv for argv in list(self.seen) for secret in secrets if secret in argv]

    def _look(self) -> None:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(os.path.join(entry.path, "cmdline"), "rb") as handle:
                        self.seen.add(handle.read().replace(b"\0", b" ").decode("utf-8", "replace"))
                except OSError:
                    continue


class ChildEnvironmentSampler(_Sampler):
    """The environment of every process below this one (``/proc/PID/environ``: what it was
    started with), by its argument list."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(interval)
        self.environments: dict[str, list[str]] = {}

    def holding(self, secrets: Iterable[str]) -> list[str]:
        """Argument lists of processes whose environment contains one of ``secrets``."""
        return [argv for argv, environment in list(self.environments.items())
                for secret in secrets if any(secret in entry for entry in environment)]

    def _look(self) -> None:
        for pid in descendants(os.getpid()):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            self.environments[command_line(pid)] = environ.decode("utf-8", "replace").split("\0")


class ModeSampler(_Sampler):
    """The mode of every file and directory under ``roots`` (a file root: that file), as each was
    seen; a run's working files exist only while it runs."""

    def __init__(self, roots: Iterable[Path], interval: float = 0.02) -> None:
        super().__init__(interval)
        self.roots = list(roots)
        self.modes: dict[Path, int] = {}

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        super().__exit__(exc_type, exc, tb)
        self._look()

    def widened(self, allowed: dict[Path, int] | None = None) -> dict[str, str]:
        """Paths whose mode grants anything to group or others, beyond the ``allowed`` exact modes."""
        allowed = allowed or {}
        return {str(path): f"{mode:o}" for path, mode in self.modes.items()
                if mode & 0o077 and allowed.get(path) != mode}

    def _look(self) -> None:
        for root in self.roots:
            for path in [root, *_paths_under(root)]:
                try:
                    self.modes[path] = os.lstat(path).st_mode & 0o7777
                except OSError:
                    continue


def _paths_under(root: Path) -> list[Path]:
    """Every path below ``root`` now: a run creates and removes its directories while it is walked,
    so a directory that is gone by the time it is listed is skipped rather than ending the walk."""
    found: list[Path] = []
    for directory, subdirectories, files in os.walk(root):  # os.walk skips what it can no longer list
        found += [Path(directory, name) for name in (*subdirectories, *files)]
    return found
