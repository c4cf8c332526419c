"""Runs for the same target never overlap: the second one is refused before it changes anything."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from wehub_backup import cli
from wehub_backup.backup.promote import promote_staging
from wehub_backup.defs.names import BACKUP_JOB
from wehub_backup.errors import LockLost, TargetBusy
from wehub_backup.pg.connection import APPLICATION_NAME
from wehub_backup.run.locks import TargetLock
from wehub_backup.run.targets import generation_names, previous_name, staging_name
from wehub_backup_tests.faults.evidence import database_oids
from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.support.backup_runs import databases_named, run_backup
from wehub_backup_tests.support.environment import BackupEnv

REFUSAL = "another backup or migration run for {target} is running; this run changed nothing"
NOTES = "SELECT id, body FROM public.notes ORDER BY id"


def step_failure(instance: dg.DagsterInstance, run_id: str) -> tuple[str, str]:
    """(step, error text) of a run's only failed step."""
    [failure] = [r.dagster_event for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)]
    return failure.step_key, failure.step_failure_data.error.to_string()


def test_run_is_refused_while_the_target_lock_is_held(
    backup_env: BackupEnv, instance: dg.DagsterInstance, scratch_source: str, vps_cluster: PostgresCluster
) -> None:
    target = "wehub_locked"
    assert run_backup(target, instance).success
    before = vps_cluster.query(NOTES, dbname=target)
    # What a running backup has at this point: the target's lock and a staging copy being restored.
    vps_cluster.fresh_database(f"{target}__staging")
    try:
        with vps_cluster.connect("postgres") as holder:
            holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"wehub_backup/{target}",))
            refused = run_backup(target, instance)
        assert not refused.success
        step, error = step_failure(instance, refused.run_id)
        assert step == "plan_supabase_backup"
        assert REFUSAL.format(target=target) in error
        # The failure hook left the other run's staging copy alone, and the target is as it was.
        assert databases_named(vps_cluster, target) == {target, f"{target}__staging"}
        assert vps_cluster.query(NOTES, dbname=target) == before
        assert not list(backup_env.backup_dir.glob("run-*"))
        last_line = backup_env.backup_log.read_text().splitlines()[-1]
        assert f"FAILURE target={target} step=plan_supabase_backup cause={REFUSAL.format(target=target)}" in last_line
    finally:
        vps_cluster.drop_database(f"{target}__staging")

    # Once the lock is free the next run goes through: the refusal was about the lock, nothing else.
    assert run_backup(target, instance).success
    assert databases_named(vps_cluster, target) == {target, f"{target}__previous"}


def test_two_runs_started_at_once_one_succeeds_one_is_refused(
    backup_env: BackupEnv, supabase_cluster: PostgresCluster, vps_cluster: PostgresCluster
) -> None:
    target = "wehub_race"
    command = [sys.executable, "-m", "wehub_backup.cli", "backup", target]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
            for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]

    assert sorted(run.returncode for run in runs) == [0, 1], outputs
    refused_stdout = next(out for run, (out, _) in zip(runs, outputs) if run.returncode == 1)
    assert "failed step: plan_supabase_backup" in refused_stdout
    assert f"cause: {REFUSAL.format(target=target)}" in refused_stdout

    with dg.DagsterInstance.from_config(str(backup_env.dagster_home)) as instance:
        records = instance.get_run_records(dg.RunsFilter(job_name=BACKUP_JOB))
        statuses = sorted(record.dagster_run.status.value for record in records)
        assert statuses == ["FAILURE", "SUCCESS"]
        [loser] = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
        [winner] = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]
        assert step_failure(instance, loser.dagster_run.run_id)[0] == "plan_supabase_backup"
        # They really overlapped: the refused run ended while the other was still running.
        assert winner.start_time < loser.end_time < winner.end_time
        steps = {r.step_key for r in instance.all_logs(loser.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_START)}
        assert steps == {"plan_supabase_backup"}

    # One complete copy, no staging or previous generation left behind, equal to the source.
    assert databases_named(vps_cluster, target) == {target}
    for query in ("SELECT count(*), sum(id) FROM public.events", "SELECT id::text, email FROM auth.users ORDER BY id",
                  "SELECT r::text FROM (SELECT * FROM public.profiles ORDER BY user_id) r"):
        assert vps_cluster.query(query, dbname=target) == supabase_cluster.query(query), query


def test_swap_is_refused_once_the_session_no_longer_holds_the_lock(vps_cluster: PostgresCluster) -> None:
    """The last check, inside the swap's transaction on the lock's own session: a lock released
    there (the keepalive has not noticed yet) stops the swap, and nothing is renamed."""
    target = "wehub_lock_check"
    with two_generations(vps_cluster, target) as before:
        lock = TargetLock.acquire("lock-check-run", vps_cluster.connect(), target)
        try:
            with lock.session() as session:
                session.execute("SELECT pg_advisory_unlock_all()")
                with pytest.raises(LockLost, match=f"lost the run's lock on {target}: its VPS session no longer holds it"):
                    promote_staging(session, vps_cluster.connect, target, "the source", adopt=True,
                                    before_swap=lock.require_on_session)
            assert database_oids(vps_cluster) == before
            assert not TargetLock.holds("lock-check-run")
        finally:
            TargetLock.release("lock-check-run")


def _project_session(vps_cluster: PostgresCluster, dbname: str) -> psycopg.Connection:
    """A session on ``dbname`` as the project's own steps open them (same login and application name)."""
    conn = vps_cluster.connect(dbname)
    conn.execute(f"SET application_name = '{APPLICATION_NAME}'")
    return conn


@contextmanager
def two_generations(vps_cluster: PostgresCluster, target: str) -> Iterator[dict[str, int]]:
    """``target`` and its staging copy, created empty; the server's database OIDs before the block.
    Every generation of ``target`` is dropped after it."""
    try:
        for name in (target, staging_name(target)):
            vps_cluster.fresh_database(name)
        yield database_oids(vps_cluster)
    finally:
        for name in generation_names(target):
            vps_cluster.drop_database(name)


@pytest.mark.parametrize("on", ["staging", "the current copy"])
def test_the_runs_own_closing_sessions_are_let_end_not_terminated(vps_cluster: PostgresCluster, on: str) -> None:
    """A step's session that is still closing when the promote starts (on staging: the load's,
    verification's; on the current copy: an incremental load's reads) is neither ended nor
    counted as an application's session: the swap waits for it, and terminates nothing."""
    target = "wehub_own_closing"
    ended_by_itself: list[bool] = []
    with two_generations(vps_cluster, target) as before:
        closing = _project_session(vps_cluster, staging_name(target) if on == "staging" else target)

        def close_soon() -> None:
            time.sleep(0.5)
            try:
                closing.execute("SELECT 1")
                ended_by_itself.append(True)
            except psycopg.OperationalError:
                ended_by_itself.append(False)
            closing.close()

        closer = threading.Thread(target=close_soon)
        closer.start()
        try:
            with vps_cluster.connect() as session:
                result = promote_staging(session, vps_cluster.connect, target, "the source", adopt=True,
                                         policy="terminate", timeout_seconds=30)
        finally:
            closer.join(10)
        assert ended_by_itself == [True]
        assert result.sessions_terminated == 0 and result.waited_seconds >= 0.4
        after = database_oids(vps_cluster)
        assert (after[target], after[previous_name(target)]) == (before[staging_name(target)], before[target])
        assert staging_name(target) not in after


def test_a_session_of_the_project_that_stays_on_staging_stops_the_swap(vps_cluster: PostgresCluster) -> None:
    """One that is still there after the bound is not closing (a step's child may still be writing):
    the verified copy is not swapped in, the error names the session and the bound."""
    target = "wehub_own_staying"
    with two_generations(vps_cluster, target) as before:
        with _project_session(vps_cluster, staging_name(target)) as staying, vps_cluster.connect() as session:
            pid = staying.info.backend_pid
            with pytest.raises(TargetBusy, match=(
                    rf"^1 {APPLICATION_NAME} session\(s\) \(pid {pid} on {staging_name(target)}\) were still "
                    "connected 1s after the steps that use them had ended; the verified copy was not swapped in "
                    "and no database was renamed or dropped")):
                promote_staging(session, vps_cluster.connect, target, "the source", adopt=True,
                                policy="terminate", timeout_seconds=30, own_sessions_seconds=1)
            staying.execute("SELECT 1")  # not ended either
        assert database_oids(vps_cluster) == before


def test_a_command_stuck_opening_the_instance_is_named_not_waited_for_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commands open the Dagster instance one at a time; one that holds that turn past the bound
    (stuck, not slow) makes the next say so in one line, and the next after it opens the instance."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    shutil.copy(Path(__file__).parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    with open(tmp_path / ".wehub-backup.lock", "ab") as stuck:
        fcntl.flock(stuck, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(SystemExit) as refused:
            cli._instance(wait_seconds=1)
        assert time.monotonic() - started >= 1
    assert refused.value.code == (
        f"wehub-backup: another wehub-backup command has been opening the Dagster instance at {tmp_path} for 1s "
        f"(it holds {tmp_path / '.wehub-backup.lock'}); this command changed nothing (end that command, or run "
        "this one again once it is done)")
    with cli._instance(wait_seconds=1) as instance:
        assert instance.root_directory == str(tmp_path)
