"""The backup job end to end: real clusters, real pg_dump/pg_restore, real Dagster runs."""

from __future__ import annotations

import dagster as dg
import pytest

from wehub_backup.definitions import build_definitions
from wehub_backup_tests.conftest import BackupEnv
from wehub_backup_tests.harness.cluster import PostgresCluster

JOB = "backup_supabase_to_vps"


def run_backup(target: str, instance: dg.DagsterInstance, **promote: object) -> dg.ExecuteInProcessResult:
    """One real run of the job, with resources built from the environment the fixture set."""
    run_config = {"ops": {"plan_supabase_backup": {"config": {"target_database": target}}}}
    if promote:
        run_config["ops"]["promote_staging_database"] = {"config": promote}
    job = build_definitions().get_job_def(JOB)
    return job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)


@pytest.fixture
def instance(backup_env: BackupEnv) -> dg.DagsterInstance:
    with dg.instance_for_test(temp_dir=str(backup_env.dagster_home)) as test_instance:
        yield test_instance


def test_backup_copies_and_verifies(backup_env: BackupEnv, instance, supabase_cluster: PostgresCluster,
                                    vps_cluster: PostgresCluster) -> None:
    result = run_backup("wehub_backup_e2e", instance)
    failures = [e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure]
    assert result.success, failures
