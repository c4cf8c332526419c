"""Supabase egress accounting, the budget refusal and the 80% warning, from real backup runs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from wehub_backup.config import EgressSettings
from wehub_backup.definitions import build_definitions
from wehub_backup.defs.assets import EGRESS_ASSET_KEY, backup_copy_asset_key
from wehub_backup.defs.backup.config import backup_run_config
from wehub_backup.defs.egress import (
    FIRST_RUN_BASIS,
    BillingCycle,
    check_egress_budget,
    egress_usage,
    last_successful_egress,
)
from wehub_backup.defs.names import BACKUP_JOB
from wehub_backup.defs.resources import AlertSettings
from wehub_backup.defs.sensors import egress_budget_sensor
from wehub_backup.units import human_bytes
from wehub_backup_tests.faults.sources import blobs_sql, recreate_source
from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.support.backup_runs import run_backup
from wehub_backup_tests.support.environment import BackupEnv
from wehub_backup_tests.support.loopback_servers import WebhookReceiver

LOG = logging.getLogger(__name__)
DUMP_STEP = "dump_supabase_database"


def run_forced_backup(instance: dg.DagsterInstance, target: str) -> dg.ExecuteInProcessResult:
    """A real run told to go ahead over the budget."""
    run_config = backup_run_config(target)
    run_config["ops"]["plan_supabase_backup"]["config"]["force_over_budget"] = True
    return build_definitions().get_job_def(BACKUP_JOB).execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False)


def dump_egress(instance: dg.DagsterInstance, run_id: str) -> int:
    """The dump step's recorded egress, read from the run's own output event."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT):
        if record.step_key == DUMP_STEP:
            return record.dagster_event.step_output_data.metadata["egress_bytes"].value
    raise AssertionError(f"run {run_id} recorded no dump output")


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_key == "plan_supabase_backup"
    return failure.step_failure_data.error.to_string()


# --- billing cycles and settings -------------------------------------------------------------


# --- real runs -------------------------------------------------------------------------------


@pytest.mark.usefixtures("scratch_source")  # a small source: what is tested is the accounting
def test_successful_and_failed_dumps_count_and_the_command_reports_them(
    backup_env: BackupEnv, home_instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    succeeded = run_backup("wehub_egress", home_instance)
    assert succeeded.success
    # Fails after the dump (an invalid promote setting): the bytes were received all the same.
    failed_late = run_backup("wehub_egress", home_instance, on_connected_sessions="bogus")
    assert not failed_late.success
    refused_early = run_backup("Bad-Name", home_instance)
    assert not refused_early.success

    first, second = dump_egress(home_instance, succeeded.run_id), dump_egress(home_instance, failed_late.run_id)
    assert first > 0 and second > 0
    usage = egress_usage(home_instance)
    assert usage.used_bytes == first + second
    assert {(run.run_id, run.status) for run in usage.runs} == {
        (succeeded.run_id, dg.DagsterRunStatus.SUCCESS), (failed_late.run_id, dg.DagsterRunStatus.FAILURE)}
    assert last_successful_egress(home_instance, BACKUP_JOB) == first
    # A later billing cycle starts from zero.
    assert egress_usage(home_instance, now=usage.cycle.end + timedelta(hours=1)).used_bytes == 0

    # The successful run materialized the copy's asset with the numbers the asset page plots.
    [materialization] = home_instance.fetch_materializations(backup_copy_asset_key("wehub_egress"), limit=5).records
    assert materialization.run_id == succeeded.run_id
    metadata = materialization.asset_materialization.metadata
    assert metadata["egress_bytes"].value == first
    assert metadata["rows"].value == 500 and metadata["artifact_bytes"].value > 0

    budget = (first + second) * 4
    monkeypatch.setenv("WEHUB_EGRESS_BUDGET_BYTES", str(budget))
    # The sensor shows the cycle on the supabase_egress asset, the failed run's dump included.
    context = dg.build_sensor_context(instance=home_instance, resources={"alert_settings": AlertSettings()})
    ticked = egress_budget_sensor(context)
    [observation] = ticked.asset_events
    assert observation.asset_key == EGRESS_ASSET_KEY
    shown = {name: entry.value for name, entry in observation.metadata.items()}
    assert (shown["used_bytes"], shown["budget_bytes"], shown["used_percent"]) == (first + second, budget, 25.0)
    assert shown["used_bytes (readable)"] == f"{human_bytes(first + second)} ({first + second:,} bytes)"
    assert shown["runs_by_status"] == "1 failure, 1 success" and shown["projected_bytes"] >= first + second
    report = subprocess.run([sys.executable, "-m", "wehub_backup.cli", "egress"],
                            capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    assert lines[0] == f"Supabase egress in the billing cycle {usage.cycle.describe()}"
    assert f"  used:       {first + second:,} bytes ({human_bytes(first + second)})" in lines
    assert f"  budget:     {budget:,} bytes ({human_bytes(budget)}, WEHUB_EGRESS_BUDGET_BYTES)" in lines
    assert "  percentage: 25.0% of the budget" in lines
    assert "  runs:       2 (1 failure, 1 success)" in lines
    [projection] = [line for line in lines if line.startswith("  projection: ")]
    projected = int(projection.split()[1].replace(",", ""))
    assert projected >= first + second
    assert f"by {usage.cycle.end:%Y-%m-%d}" in projection
    assert "  next run:   about " in report.stdout and f"({first:,} bytes)" in report.stdout


def test_run_that_would_exceed_the_budget_is_refused_unless_forced(
    backup_env: BackupEnv, instance: dg.DagsterInstance, vps_cluster: PostgresCluster,
    supabase_cluster: PostgresCluster, scratch_source: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    source_bytes = supabase_cluster.query("SELECT pg_database_size(%s)", (scratch_source,))[0][0]
    monkeypatch.setenv("WEHUB_EGRESS_BUDGET_BYTES", str(source_bytes - 1))

    refused = run_backup("wehub_budget", instance)

    assert not refused.success
    message = failure_message(refused)
    assert f"egress budget: this run needs about {human_bytes(source_bytes)} ({FIRST_RUN_BASIS}) " \
           f"+ 0 bytes used since " in message
    assert f"> {human_bytes(source_bytes - 1)} budget; nothing was changed (force_over_budget: true runs it anyway)" \
        in message
    assert not vps_cluster.query("SELECT datname FROM pg_database WHERE datname LIKE 'wehub_budget%'")
    assert not list(backup_env.backup_dir.glob("run-*"))
    assert "FAILURE target=wehub_budget step=plan_supabase_backup cause=egress budget" in \
        backup_env.backup_log.read_text().splitlines()[-1]

    forced = run_forced_backup(instance, "wehub_budget")
    assert forced.success
    warnings = [r.user_message for r in instance.all_logs(forced.run_id) if r.level == logging.WARNING]
    assert any("running because force_over_budget is set" in w for w in warnings), warnings

    # From now on the estimate is the last successful run's egress: exactly at the budget runs, one byte over is refused.
    last = dump_egress(instance, forced.run_id)
    used = egress_usage(instance).used_bytes
    monkeypatch.setenv("WEHUB_EGRESS_BUDGET_BYTES", str(used + last - 1))
    refused_again = run_backup("wehub_budget", instance)
    assert f"needs about {human_bytes(last)} (like the last successful run)" in failure_message(refused_again)
    monkeypatch.setenv("WEHUB_EGRESS_BUDGET_BYTES", str(used + last))
    within = run_backup("wehub_budget", instance)
    assert within.success
    plan_metadata = within.output_for_node("plan_supabase_backup")
    assert plan_metadata.target == "wehub_budget"
    [plan_output] = [e for e in within.all_events if e.is_successful_output and e.step_key == "plan_supabase_backup"]
    recorded = plan_output.step_output_data.metadata
    assert recorded["egress_estimate_bytes"].value == last
    assert recorded["egress_used_this_cycle_bytes"].value == used


def plan_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    [output] = [e for e in result.all_events if e.is_successful_output and e.step_key == "plan_supabase_backup"]
    return {key: value.value for key, value in output.step_output_data.metadata.items()}


def test_first_run_estimate_counts_bytea_twice(
    backup_env: BackupEnv, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """16 MB of incompressible bytea: COPY sends it as 32 MB of hex, more than the whole database
    holds on disk, so an estimate from the database's size would let a run past the budget."""
    source = recreate_source(supabase_cluster, "egress_bytea_source", blobs_sql(4000, 4096))
    monkeypatch.setenv("SUPABASE_DB_NAME", source)
    try:
        database_bytes = supabase_cluster.query("SELECT pg_database_size(%s)", (source,))[0][0]
        result = run_backup("wehub_egress_bytea", instance)
    finally:
        supabase_cluster.drop_database(source)
    assert result.success
    estimate, received = plan_metadata(result)["egress_estimate_bytes"], dump_egress(instance, result.run_id)
    assert database_bytes < received <= estimate < 2 * received, (database_bytes, received, estimate)


@pytest.mark.usefixtures("scratch_source")  # a small source: what is tested is the accounting
def test_warning_at_eighty_percent_is_sent_once_per_cycle(
    backup_env: BackupEnv, instance: dg.DagsterInstance, receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = run_backup("wehub_warning", instance)
    assert result.success
    used = dump_egress(instance, result.run_id)
    alerts = AlertSettings(webhook_url=receiver.url, dagster_url="http://dagster.test:3000")
    now = datetime.now(UTC)

    below = EgressSettings(budget_bytes=int(used / 0.79))
    cursor, outcome = check_egress_budget(instance, None, alerts.channels(), below, now, LOG)
    assert cursor is None and outcome.endswith("(79%) used: below 80%")
    assert receiver.payloads == []

    monkeypatch.setenv("WEHUB_EGRESS_BUDGET_BYTES", str(int(used / 0.85)))
    context = dg.build_sensor_context(instance=instance, resources={"alert_settings": alerts})
    ticked = egress_budget_sensor(context)
    outcome = ticked.skip_reason
    assert isinstance(outcome, dg.SkipReason) and (outcome.skip_message or "").endswith("(85%) used: warned")
    cycle_start = BillingCycle.containing(now).start
    assert ticked.cursor == cycle_start.isoformat()
    [payload] = receiver.payloads
    lines = payload["text"].splitlines()
    assert lines[0] == "wehub_backup: Supabase egress at 85% of the budget"
    assert lines[1] == f"Billing cycle: {BillingCycle.containing(now).describe()}"
    assert lines[2].endswith("(85%) in 1 run(s)")
    assert lines[-1] == "Runs: http://dagster.test:3000/runs"

    again = dg.build_sensor_context(instance=instance, cursor=cycle_start.isoformat(), resources={"alert_settings": alerts})
    skipped = egress_budget_sensor(again).skip_reason
    assert skipped is not None and (skipped.skip_message or "").endswith("already warned this cycle")
    assert len(receiver.payloads) == 1
    # A cursor from the previous cycle does not silence this one.
    previous_cycle = BillingCycle.containing(cycle_start - timedelta(days=1)).start.isoformat()
    _, outcome = check_egress_budget(instance, previous_cycle, alerts.channels(), EgressSettings.from_env(), now, LOG)
    assert outcome.endswith("warned") and len(receiver.payloads) == 2
