"""Sensors that turn failed runs and overdue backups into alerts.

``alert_on_run_failure`` reports every failed backup or migration run with its failed step,
target and classified cause. ``backup_freshness_sensor`` catches what no failure sensor can
see: a schedule that did not fire, a daemon that was down, runs that never started.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from wehub_backup.alerts import (
    DEFAULT_MAX_BACKUP_AGE,
    AlertMessage,
    AlertSettings,
    backup_is_stale,
    classify_failure,
    deliver_alert,
    none_delivered,
    run_url,
    stale_backup_alert,
)
from wehub_backup.jobs import backup_supabase_to_vps, migrate_vps_to_supabase
from wehub_backup.ops import run_target

if TYPE_CHECKING:
    from dagster_shared.error import SerializableErrorInfo

MAX_AGE_ENV = "WEHUB_BACKUP_MAX_AGE_HOURS"
MONITORED_JOB_NAMES = frozenset({backup_supabase_to_vps.name, migrate_vps_to_supabase.name})


# --- failed runs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFailure:
    """Where a run failed (a step key, or None when it failed outside its steps) and why."""

    step_key: str | None
    error_text: str


def error_text(error: SerializableErrorInfo | None) -> str:
    """The messages of an error and of the exceptions behind it, without stack frames.

    Dagster wraps an op's exception ("Error occurred while executing op ...") and keeps the
    original as the cause; the original (a psycopg or pg_dump message) is what classifies.
    """
    messages = []
    pending = [error]
    while pending:
        current = pending.pop(0)
        if current is not None:
            messages.append(current.message.strip())
            pending += [current.cause, current.context]
    return "\n".join(messages)


def find_run_failure(step_failures: list[dg.DagsterEvent], run_failure: dg.DagsterEvent) -> RunFailure:
    """The first failed step and its error; else the run's own failure (e.g. a crashed worker).

    A run marked failed from outside (Dagster's run monitoring, or the next run finding the
    working files of one whose process died) has a message but no failure data.
    """
    if step_failures:
        first = step_failures[0]
        return RunFailure(first.step_key, error_text(first.step_failure_data.error))
    failure_data = run_failure.job_failure_data if run_failure.is_job_failure else None
    error = failure_data.error if failure_data is not None else None
    return RunFailure(None, error_text(error) or run_failure.message or "")


def failure_alert(context: dg.RunFailureSensorContext, dagster_url: str | None) -> AlertMessage:
    """The alert for the run this failure sensor tick is about."""
    run = context.dagster_run
    failure = find_run_failure(list(context.get_step_failure_events()), context.failure_event)
    return AlertMessage(
        job_name=run.job_name,
        run_id=run.run_id,
        failed_step=failure.step_key,
        target=run_target(run),
        cause=classify_failure(failure.error_text),
        run_url=run_url(dagster_url, run.run_id),
    )


@dg.run_failure_sensor(monitor_all_code_locations=True, default_status=dg.DefaultSensorStatus.RUNNING)
def alert_on_run_failure(context: dg.RunFailureSensorContext, alert_settings: AlertSettings) -> None:
    """Send one alert per failed backup or migration run to the configured channels.

    Runs started from the command line (``dg.execute_job``) carry no code-location origin, and
    ``monitored_jobs`` would silently skip them; so every failed run is seen and the two jobs
    are picked by name.
    """
    if context.dagster_run.job_name in MONITORED_JOB_NAMES:
        deliver_alert(failure_alert(context, alert_settings.dagster_url), alert_settings, log=context.log)


# --- freshness -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FreshnessCursor:
    """What the freshness sensor remembers between ticks.

    ``watching_since`` stands in for the last success while there has never been one, so a new
    installation is not reported stale before its first scheduled backup was due.
    ``alerted_for`` names the stale period already reported (the last success it started from),
    so an overdue backup raises one alert, not one per tick.
    """

    watching_since: datetime
    alerted_for: str | None = None

    @classmethod
    def parse(cls, cursor: str | None, now: datetime) -> FreshnessCursor:
        if not cursor:
            return cls(watching_since=now)
        state = json.loads(cursor)
        return cls(datetime.fromisoformat(state["watching_since"]), state.get("alerted_for"))

    def serialize(self) -> str:
        return json.dumps({"watching_since": self.watching_since.isoformat(), "alerted_for": self.alerted_for})


def max_backup_age(environ: Mapping[str, str] = os.environ) -> timedelta:
    """The longest gap between successful backups before alerting: a weekly schedule plus a day."""
    hours = environ.get(MAX_AGE_ENV)
    return timedelta(hours=float(hours)) if hours else DEFAULT_MAX_BACKUP_AGE


def last_success_time(instance: dg.DagsterInstance, job_name: str) -> datetime | None:
    """When the most recent successful run of ``job_name`` ended, from the run storage."""
    records = instance.get_run_records(
        dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1
    )
    if not records:
        return None
    record = records[0]
    return datetime.fromtimestamp(record.end_time or record.update_timestamp.timestamp(), UTC)


def _stale_period(last_success: datetime | None) -> str:
    return last_success.isoformat() if last_success else "never"


def check_backup_freshness(
    instance: dg.DagsterInstance,
    cursor: str | None,
    settings: AlertSettings,
    now: datetime,
    max_age: timedelta,
    log: logging.Logger,
) -> tuple[str, str]:
    """Alert once when the last successful backup is older than ``max_age``.

    Returns the new cursor and a sentence for the tick. If every channel failed to deliver,
    the period stays unreported so the next tick tries again.
    """
    job_name = backup_supabase_to_vps.name
    state = FreshnessCursor.parse(cursor, now)
    last_success = last_success_time(instance, job_name)
    history = (
        f"last successful {job_name} ended {last_success:%Y-%m-%d %H:%M %Z}"
        if last_success
        else f"no successful {job_name} since monitoring began {state.watching_since:%Y-%m-%d %H:%M %Z}"
    )
    if not backup_is_stale(last_success or state.watching_since, now, max_age):
        return state.serialize(), f"{history}: on time"
    period = _stale_period(last_success)
    if state.alerted_for == period:
        return state.serialize(), f"{history}: overdue, already alerted"
    alert = stale_backup_alert(job_name, last_success, state.watching_since, now, max_age, settings.dagster_url)
    if none_delivered(deliver_alert(alert, settings, log=log)):
        return state.serialize(), f"{history}: overdue, alert not delivered, will retry"
    return replace(state, alerted_for=period).serialize(), f"{history}: overdue, alerted"


@dg.sensor(minimum_interval_seconds=3600, default_status=dg.DefaultSensorStatus.RUNNING)
def backup_freshness_sensor(context: dg.SensorEvaluationContext, alert_settings: AlertSettings) -> dg.SkipReason:
    """Hourly: alert when no backup has succeeded within ``WEHUB_BACKUP_MAX_AGE_HOURS``."""
    cursor, outcome = check_backup_freshness(
        context.instance, context.cursor, alert_settings, datetime.now(UTC), max_backup_age(), context.log
    )
    context.update_cursor(cursor)
    return dg.SkipReason(outcome)
