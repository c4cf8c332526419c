"""Runs for the same target never overlap: the second one is refused before it changes anything."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from wehub_backup.backup.promote import promote_staging
from wehub_backup.defs.names import BACKUP_JOB
from wehub_backup.errors import LockLost
from wehub_backup.run.locks import TargetLock
from wehub_backup.run.targets import staging_name
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
    for name in (target, staging_name(target)):
        vps_cluster.fresh_database(name)
    before = database_oids(vps_cluster)
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
        for name in (target, staging_name(target)):
            vps_cluster.drop_database(name)
