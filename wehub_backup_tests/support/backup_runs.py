"""Running the backup job in a test, and reading what it did."""

from __future__ import annotations

import dagster as dg

from wehub_backup.definitions import build_definitions
from wehub_backup.defs.backup.config import backup_run_config
from wehub_backup.defs.names import BACKUP_JOB
from wehub_backup.defs.resources import AlertSettings
from wehub_backup.defs.sensors import alert_on_run_failure
from wehub_backup_tests.harness.cluster import PostgresCluster


def run_backup(target: str, instance: dg.DagsterInstance, *, adopt: bool = False,
               **promote: object) -> dg.ExecuteInProcessResult:
    """One real run of the job, with resources built from the environment the fixture set."""
    run_config = backup_run_config(target, adopt)
    if promote:
        run_config["ops"]["promote_staging_database"] = {"config": promote}
    job = build_definitions().get_job_def(BACKUP_JOB)
    return job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)


def step_errors(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure]


def databases_named(vps: PostgresCluster, prefix: str) -> set[str]:
    return {r[0] for r in vps.query("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))}


def alert_on_failed_run(instance: dg.DagsterInstance, run: dg.DagsterRun, failure: dg.DagsterEvent,
                        settings: AlertSettings) -> None:
    """Evaluate the run-failure sensor for one failed run, as the daemon does once it fails."""
    alert_on_run_failure(dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure", dagster_event=failure, dagster_instance=instance, dagster_run=run,
        resources={"alert_settings": settings},
    ).for_run_failure())
