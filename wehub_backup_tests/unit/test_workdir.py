"""Directories of runs (working files, password files): a live run's is kept, a dead run's is swept."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from wehub_backup.config import default_runtime_root
from wehub_backup.defs.resources import BackupWorkspace
from wehub_backup.errors import WorkspaceError
from wehub_backup.run.log import append_log_line
from wehub_backup.run.workdir import RunDirectory, ensure_private_directory


def test_live_run_directory_is_kept_and_dead_ones_are_swept(tmp_path: Path) -> None:
    live = RunDirectory.create(tmp_path, "live")
    dead = tmp_path / "run-dead"
    dead.mkdir()
    (dead / ".lock").touch()
    try:
        assert RunDirectory.sweep_stale(tmp_path) == [dead]
        assert live.is_dir() and not dead.exists()
    finally:
        RunDirectory.remove(tmp_path, "live")
    assert not live.exists()


def test_unnamed_directory_of_a_killed_run_is_swept_after_a_grace_period(tmp_path: Path) -> None:
    young, old = tmp_path / ".run-young", tmp_path / ".run-old"
    for path in (young, old):
        path.mkdir()
        (path / ".lock").touch()
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert RunDirectory.sweep_stale(tmp_path) == [old]
    assert young.is_dir()
    assert RunDirectory.run_id_of(old) == "old"


def test_log_line_stays_one_line(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "backup.log"
    append_log_line(log, "backup_supabase_to_vps", "failure", "wehub", "cause=line one\nline two")
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and "FAILURE target=wehub" in lines[0]


def test_secrets_directory_that_others_can_enter_is_refused(tmp_path: Path) -> None:
    """A shared memory file system lets anyone create the directory's name first."""
    shared = tmp_path / "wehub-backup"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(WorkspaceError, match="must be a directory owned by this user with mode 0700"):
        ensure_private_directory(shared)
    shared.chmod(0o700)
    assert ensure_private_directory(shared) == shared
    created = ensure_private_directory(tmp_path / "new")
    assert stat.S_IMODE(created.stat().st_mode) == 0o700


def test_secrets_directory_defaults_to_a_memory_file_system() -> None:
    assert default_runtime_root({}) == Path(f"/dev/shm/wehub-backup-{os.getuid()}")
    assert default_runtime_root({"XDG_RUNTIME_DIR": "/run/user/1000"}) == Path("/run/user/1000/wehub-backup")
    assert BackupWorkspace(runtime_dir="/srv/secrets").runtime_root() == Path("/srv/secrets")
