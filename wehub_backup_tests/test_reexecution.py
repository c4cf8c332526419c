"""Re-executing a failed backup from its failed step: refused in one line before anything changes."""

from __future__ import annotations

import dagster as dg
import pytest

from wehub_backup.definitions import backup_job_with_resources
from wehub_backup.defs.names import FAILURE_KIND_TAG, FAILURE_TAG
from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.support.backup_runs import databases_named, run_backup


@pytest.mark.usefixtures("scratch_source")
def test_reexecution_from_the_failed_step_is_refused_in_one_line(
    instance: dg.DagsterInstance, vps_cluster: PostgresCluster
) -> None:
    assert run_backup("wehub_resume", instance).success
    failed = run_backup("wehub_resume", instance, on_connected_sessions="bogus")  # fails at promote
    assert not failed.success

    with dg.execute_job(dg.reconstructable(backup_job_with_resources), instance, raise_on_error=False,
                        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance)) as retried:
        assert not retried.success
        [failure] = [event for event in retried.all_events if event.is_step_failure]

    assert failure.step_key == "promote_staging_database"
    assert failure.step_failure_data.user_failure_data.description == (
        f"a re-execution cannot start at promote_staging_database: its inputs died with run {failed.run_id} "
        "(snapshot, working files, lock); re-execute all steps, or launch a new run")
    run = instance.get_run_by_id(retried.run_id)
    assert run is not None and run.tags[FAILURE_KIND_TAG] == "config"
    assert run.tags[FAILURE_TAG].startswith("a re-execution cannot start at promote_staging_database")
    assert databases_named(vps_cluster, "wehub_resume") == {"wehub_resume"}  # the copy as it was, no staging
