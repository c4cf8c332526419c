"""A run's private directories (working files, password files), and the free space it needs."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Protocol

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


def ensure_private_directory(path: Path) -> Path:
    """``ensure_directory``, and refuse one that is not this user's alone (a shared tmpfs such as
    ``/dev/shm`` lets anyone create the name first)."""
    ensure_directory(path)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise WorkspaceError(f"{path} must be a directory owned by this user with mode 0700 (it holds password "
                             "files): remove it, or set WEHUB_RUNTIME_DIR")
    return path


class Closable(Protocol):
    def close(self) -> None: ...


class RunDirectory:
    """A run's private directory under a root, flock-ed while the run's process is alive.

    Each run has two: its working files under the backup directory, and its password files
    under the runtime root. A run killed with SIGKILL cannot clean up after itself; the next
    run finds its directories unlocked and removes them.

    What a run keeps open from one step to a later one (the stream engine's snapshot on the
    source) is kept under its directory too, and closed when the run ends, whichever step it
    stopped in: its process goes on after a failed or interrupted run, and so would the resource.
    """

    _locks: dict[Path, int] = {}
    _kept_open: dict[Path, list[Closable]] = {}

    @classmethod
    def create(cls, root: Path, run_id: str) -> Path:
        """Lock the directory under a name ``stale`` ignores, then give it its name: a run
        starting at the same moment never sees it unlocked and takes it for a dead run's."""
        path = cls.path(ensure_directory(root), run_id)
        hidden = ensure_directory(root / f".run-{run_id}")
        fd = os.open(hidden / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        hidden.rename(path)
        cls._locks[path] = fd
        return path

    @staticmethod
    def path(root: Path, run_id: str) -> Path:
        """The run's directory under ``root`` (whether or not it exists)."""
        return root / f"run-{run_id}"

    @staticmethod
    def run_id_of(path: Path) -> str:
        return path.name.removeprefix(".").removeprefix("run-")

    @classmethod
    def keep_open(cls, path: Path, resource: Closable) -> None:
        """Close ``resource`` (closing twice must be harmless) at the latest when the run's directory ``path`` goes."""
        cls._kept_open.setdefault(path, []).append(resource)

    @classmethod
    def close_kept_open(cls, root: Path, run_id: str) -> None:
        """Close what the run keeps open under its directory below ``root``, newest first."""
        for resource in reversed(cls._kept_open.pop(cls.path(root, run_id), [])):
            resource.close()

    @classmethod
    def remove(cls, root: Path, run_id: str) -> None:
        """Close what the run keeps open under the directory, then remove it and release its lock."""
        cls.close_kept_open(root, run_id)
        path = cls.path(root, run_id)
        shutil.rmtree(path, ignore_errors=True)
        fd = cls._locks.pop(path, None)
        if fd is not None:
            os.close(fd)

    @staticmethod
    def stale(root: Path) -> list[Path]:
        """The directories of runs whose process is gone."""
        if not root.is_dir():
            return []
        found = [path for path in sorted(root.glob("run-*")) if path.is_dir() and not _is_locked(path / ".lock")]
        # A run killed between creating its directory and naming it; a young one may be a run
        # starting right now, not yet holding its lock.
        found += [hidden for hidden in root.glob(".run-*")
                  if time.time() - hidden.stat().st_mtime > _NAMING_GRACE_SECONDS and not _is_locked(hidden / ".lock")]
        return found

    @staticmethod
    def discard(path: Path) -> Path:
        shutil.rmtree(path, ignore_errors=True)
        return path

    @classmethod
    def sweep_stale(cls, root: Path) -> list[Path]:
        """Remove the directories of runs whose process is gone; return what was removed."""
        return [cls.discard(path) for path in cls.stale(root)]


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
