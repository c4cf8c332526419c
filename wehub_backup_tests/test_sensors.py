"""The failure and freshness sensors, evaluated on real runs in a real Dagster instance,
delivering to a real webhook receiver on loopback."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
import pytest

from wehub_backup.defs.assets import backup_copy_asset_key
from wehub_backup.defs.lifecycle import run_target
from wehub_backup.defs.resources import AlertSettings
from wehub_backup.defs.sensors import (
    FreshnessCursor,
    backup_freshness_sensor,
    check_backup_freshness,
    find_run_failure,
    last_copy_time,
)
from wehub_backup_tests.harness.cluster import free_tcp_port
from wehub_backup_tests.support.backup_runs import alert_on_failed_run
from wehub_backup_tests.support.loopback_servers import LOOPBACK, WebhookReceiver

DAGSTER_URL = "http://dagster.test:3000"
TESTING, PRODUCTION = "wehub_backup_test", "wehub"
LOG = logging.getLogger(__name__)
EIGHT_DAYS = timedelta(days=8)


@dg.op
def dump_supabase() -> None:
    """Fails the way a dump does when the Supabase host refuses connections."""
    psycopg.connect(
        host=LOOPBACK, port=free_tcp_port(), user="postgres", password="hunter2", connect_timeout=5
    )


@dg.job(name="backup_supabase_to_vps", tags={"wehub/target": "wehub_backup_test"})
def failing_backup() -> None:
    dump_supabase()


@dg.job(name="some_other_job")
def failing_other_job() -> None:
    dump_supabase()


@dg.op
def finish(context) -> None:  # noqa: ANN001 - Dagster reads the annotation, which a future import turns into text
    """A backup that succeeds, to give the freshness sensor a verified copy of the testing target."""
    context.log_event(dg.AssetMaterialization(backup_copy_asset_key(TESTING)))


@dg.job(name="backup_supabase_to_vps")
def succeeding_backup() -> None:
    finish()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def _settings(receiver: WebhookReceiver) -> AlertSettings:
    return AlertSettings(webhook_url=receiver.url, dagster_url=DAGSTER_URL)


def _failed_run(instance: dg.DagsterInstance, job: dg.JobDefinition = failing_backup) -> dg.ExecuteInProcessResult:
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    return result


def _evaluate_failure_sensor(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, receiver: WebhookReceiver
) -> None:
    alert_on_failed_run(instance, result.dagster_run, result.get_run_failure_event(), _settings(receiver))


def test_failure_sensor_alerts_with_step_target_cause_and_link(
    instance: dg.DagsterInstance, receiver: WebhookReceiver
) -> None:
    result = _failed_run(instance)

    _evaluate_failure_sensor(instance, result, receiver)

    [payload] = receiver.payloads
    lines = payload["text"].splitlines()
    assert lines[0] == "wehub_backup: backup_supabase_to_vps failed (network)"
    assert lines[1:4] == ["Job: backup_supabase_to_vps", "Failed step: dump_supabase", "Target: wehub_backup_test"]
    assert lines[4].startswith('Cause (network): connection to server at "127.0.0.1", port ')
    assert lines[4].endswith("failed: Connection refused")
    assert lines[5] == f"Run: {DAGSTER_URL}/runs/{result.run_id}"
    assert "hunter2" not in payload["text"]

    # The run shows its cause (its step did not tag it) and where the alert went.
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    assert run.tags["wehub/failure_kind"] == "network"
    assert run.tags["wehub/failure"] == lines[4].removeprefix("Cause (network): ")
    assert run.tags["wehub/alert"] == f"webhook http://{LOOPBACK}: ok"
    logged = [record.message for record in instance.all_logs(result.run_id)]
    assert f"Failure alert: webhook http://{LOOPBACK}: ok" in logged


def test_undelivered_alert_shows_on_the_run(instance: dg.DagsterInstance) -> None:
    result = _failed_run(instance)
    down = AlertSettings(webhook_url=f"http://{LOOPBACK}:{free_tcp_port()}/hook", dagster_url=DAGSTER_URL)
    alert_on_failed_run(instance, result.dagster_run, result.get_run_failure_event(), down)
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["wehub/alert"].startswith(f"webhook http://{LOOPBACK}: failed (")


def test_failure_sensor_ignores_other_jobs(instance: dg.DagsterInstance, receiver: WebhookReceiver) -> None:
    _evaluate_failure_sensor(instance, _failed_run(instance, failing_other_job), receiver)
    assert receiver.requests == 0


def test_run_failure_without_step_failures_falls_back_to_the_run_event(instance: dg.DagsterInstance) -> None:
    result = _failed_run(instance)
    failure = find_run_failure([], result.get_run_failure_event())
    assert failure.step_key is None
    assert "dump_supabase" in failure.error_text


def test_run_target_prefers_the_tag_then_the_run_config() -> None:
    tagged = dg.DagsterRun(job_name="j", run_id="r1", tags={"wehub/target": "wehub"})
    configured = dg.DagsterRun(
        job_name="j", run_id="r2", run_config={"ops": {"restore": {"config": {"target_database": "wehub_backup_test"}}}}
    )
    assert run_target(tagged) == "wehub"
    assert run_target(configured) == "wehub_backup_test"
    assert run_target(dg.DagsterRun(job_name="j", run_id="r3")) is None


def _tick(instance: dg.DagsterInstance, cursor: str | None, now: datetime, receiver: WebhookReceiver,
          target: str = TESTING) -> str:
    cursor, _ = check_backup_freshness(instance, cursor, _settings(receiver).channels(), now, EIGHT_DAYS, LOG, target)
    return cursor


def test_freshness_alerts_once_per_stale_period(instance: dg.DagsterInstance, receiver: WebhookReceiver) -> None:
    assert succeeding_backup.execute_in_process(instance=instance).success
    finished = last_copy_time(instance, TESTING)
    assert finished is not None and abs(datetime.now(UTC) - finished) < timedelta(minutes=1)
    _failed_run(instance)
    assert last_copy_time(instance, TESTING) == finished

    cursor = _tick(instance, None, finished + timedelta(days=7), receiver)
    assert receiver.payloads == []
    cursor = _tick(instance, cursor, finished + timedelta(days=9), receiver)
    cursor = _tick(instance, cursor, finished + timedelta(days=10), receiver)
    [payload] = receiver.payloads
    assert "no successful backup_supabase_to_vps into wehub_backup_test for more than 8 days" in payload["text"]
    assert "(9 days ago)" in payload["text"]

    assert succeeding_backup.execute_in_process(instance=instance).success
    newer = last_copy_time(instance, TESTING)
    assert newer is not None and newer > finished
    _tick(instance, cursor, newer + timedelta(days=9), receiver)
    assert len(receiver.payloads) == 2


def test_freshness_is_per_target(instance: dg.DagsterInstance, receiver: WebhookReceiver) -> None:
    """A fresh testing copy (a Launchpad click into the default target, say) leaves an old production copy overdue."""
    watching_since = datetime.now(UTC) - timedelta(days=9)
    assert succeeding_backup.execute_in_process(instance=instance).success
    cursor = FreshnessCursor(watching_since=watching_since).serialize()

    _tick(instance, cursor, datetime.now(UTC), receiver, TESTING)
    assert receiver.payloads == []
    _tick(instance, cursor, datetime.now(UTC), receiver, PRODUCTION)
    [payload] = receiver.payloads
    assert "no successful backup_supabase_to_vps into wehub for more than 8 days" in payload["text"]


def test_freshness_without_any_success_counts_from_first_tick(
    instance: dg.DagsterInstance, receiver: WebhookReceiver
) -> None:
    first = datetime(2025, 3, 2, 2, 0, tzinfo=UTC)
    cursor = _tick(instance, None, first, receiver)
    assert FreshnessCursor.parse(cursor, first + timedelta(days=1)).watching_since == first
    cursor = _tick(instance, cursor, first + timedelta(days=7), receiver)
    assert receiver.payloads == []
    _tick(instance, cursor, first + timedelta(days=8, hours=1), receiver)
    [payload] = receiver.payloads
    assert "No successful run recorded since monitoring started at 2025-03-02 02:00 UTC" in payload["text"]


def test_freshness_alert_that_was_not_delivered_is_sent_on_a_later_tick(
    instance: dg.DagsterInstance, receiver: WebhookReceiver
) -> None:
    first = datetime(2025, 3, 2, 2, 0, tzinfo=UTC)
    down = AlertSettings(webhook_url=f"http://{LOOPBACK}:{free_tcp_port()}/hook", dagster_url=DAGSTER_URL)
    cursor = FreshnessCursor(watching_since=first).serialize()
    cursor, outcome = check_backup_freshness(instance, cursor, down.channels(), first + timedelta(days=9), EIGHT_DAYS,
                                             LOG, TESTING)
    assert outcome.endswith("overdue, alert not delivered, will retry")
    _tick(instance, cursor, first + timedelta(days=9, hours=1), receiver)
    assert len(receiver.payloads) == 1


def test_freshness_sensor_tick_updates_cursor_and_delivers(
    instance: dg.DagsterInstance, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEHUB_BACKUP_MAX_AGE_HOURS", "24")
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    context = dg.build_sensor_context(
        instance=instance,
        cursor=FreshnessCursor(watching_since=two_days_ago).serialize(),
        resources={"alert_settings": _settings(receiver)},
    )

    outcome = backup_freshness_sensor(context)

    assert isinstance(outcome, dg.SkipReason)
    assert (outcome.skip_message or "").endswith("overdue, alerted")
    assert json.loads(context.cursor or "{}")["alerted_for"] == "wehub_backup_test@never"
    [payload] = receiver.payloads
    assert "for more than 1 day" in payload["text"]


