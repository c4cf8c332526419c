"""A run's private working directory, and the free space it needs."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path

from wehub_backup.errors import WorkspaceError
from wehub_backup.files import make_directories

_NAMING_GRACE_SECONDS = 60


def ensure_parent(path: Path) -> None:
    try:
        make_directories(path.parent)
    except OSError as error:
        raise WorkspaceError(f"cannot create directory {path.parent}: {error.strerror}") from None


def ensure_directory(path: Path) -> Path:
    try:
        make_directories(path)
        if not path.is_dir():
            raise FileExistsError(path)
    except FileExistsError:
        raise WorkspaceError(f"{path} exists and is not a directory") from None
    except OSError as error:
        raise WorkspaceError(f"cannot create directory {path}: {error.strerror}") from None
    if not os.access(path, os.W_OK):
        raise WorkspaceError(f"directory {path} is not writable by this user")
    return path


class RunDirectory:
    """A run's private working directory, flock-ed while the run's process is alive.

    A run killed with SIGKILL cannot clean up after itself; the next run finds its
    directory unlocked and removes it.
    """

    _locks: dict[str, int] = {}

    @classmethod
    def create(cls, backup_dir: Path, run_id: str) -> Path:
        """Lock the directory under a name ``sweep_stale`` ignores, then give it its name: a run
        starting at the same moment never sees it unlocked and takes it for a dead run's."""
        path = ensure_directory(backup_dir) / f"run-{run_id}"
        hidden = ensure_directory(backup_dir / f".run-{run_id}")
        fd = os.open(hidden / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        hidden.rename(path)
        cls._locks[run_id] = fd
        return path

    @staticmethod
    def run_id_of(path: Path) -> str:
        return path.name.removeprefix(".").removeprefix("run-")

    @classmethod
    def remove(cls, backup_dir: Path, run_id: str) -> None:
        shutil.rmtree(backup_dir / f"run-{run_id}", ignore_errors=True)
        fd = cls._locks.pop(run_id, None)
        if fd is not None:
            os.close(fd)

    @staticmethod
    def sweep_stale(backup_dir: Path) -> list[Path]:
        """Remove the directories of runs whose process is gone; return what was removed."""
        removed = []
        for path in sorted(backup_dir.glob("run-*")) if backup_dir.is_dir() else []:
            if path.is_dir() and not _is_locked(path / ".lock"):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        for hidden in backup_dir.glob(".run-*") if backup_dir.is_dir() else []:
            # A run killed between creating its directory and naming it; a young one may be
            # a run starting right now, not yet holding its lock.
            if time.time() - hidden.stat().st_mtime > _NAMING_GRACE_SECONDS and not _is_locked(hidden / ".lock"):
                shutil.rmtree(hidden, ignore_errors=True)
                removed.append(hidden)
        return removed


def _is_locked(lock_path: Path) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def space_shortfall(directory: Path, needed: int, purpose: str) -> str | None:
    """None when ``directory`` has ``needed`` bytes free, else a one-line reason naming both figures."""
    free = free_bytes(directory)
    if free >= needed:
        return None
    return f"not enough free space in {directory}: {free // 2**20} MiB free, about {needed // 2**20} MiB needed for {purpose}"
