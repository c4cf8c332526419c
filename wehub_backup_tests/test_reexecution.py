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


@pytest.mark.usefixtures("scratch_source")
def test_reexecution_of_all_steps_that_succeeds_drops_the_failure_it_inherited(
    instance: dg.DagsterInstance, vps_cluster: PostgresCluster
) -> None:
    failed = run_backup("wehub_rerun", instance, on_connected_sessions="bogus")
    parent = instance.get_run_by_id(failed.run_id)
    assert parent is not None and parent.tags[FAILURE_KIND_TAG] == "config"

    # As the UI re-executes all steps: the parent's tags come along (here with a corrected config).
    with dg.execute_job(dg.reconstructable(backup_job_with_resources), instance, raise_on_error=False,
                        run_config={"ops": {"plan_supabase_backup": {"config": {"target_database": "wehub_rerun"}}}},
                        tags=dict(parent.tags),
                        reexecution_options=dg.ReexecutionOptions(parent_run_id=failed.run_id)) as rerun:
        assert rerun.success
    run = instance.get_run_by_id(rerun.run_id)
    assert run is not None
    inherited = f"none: inherited from run {failed.run_id}"
    assert (run.tags[FAILURE_TAG], run.tags[FAILURE_KIND_TAG]) == (inherited, inherited)
    assert run.tags["wehub/summary"].startswith("SUCCESS; target: wehub_rerun")
    assert databases_named(vps_cluster, "wehub_rerun") == {"wehub_rerun"}
