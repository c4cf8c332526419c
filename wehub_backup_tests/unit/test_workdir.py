"""Working directories of runs: a live run's is kept, a dead run's is swept."""

from __future__ import annotations

import os
import time
from pathlib import Path

from wehub_backup.run.log import append_log_line
from wehub_backup.run.workdir import RunDirectory


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
