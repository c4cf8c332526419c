"""Sensors that turn failed runs, overdue backups and a spent egress budget into alerts.

``alert_on_run_failure`` reports every failed backup or migration run with its failed step,
target and classified cause. ``backup_freshness_sensor`` catches what no failure sensor can
see: a schedule that did not fire, a daemon that was down, runs that never started.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import dagster as dg

from wehub_backup.alerts.delivery import AlertChannels, deliver_alert, none_delivered
from wehub_backup.alerts.messages import AlertMessage, backup_is_stale, run_url, stale_backup_alert
from wehub_backup.config import (
    BUDGET_ENV,
    MAX_AGE_ENV,
    TARGET_ENV,
    EgressSettings,
    configured_backup_target,
    max_backup_age,
)
from wehub_backup.defs.assets import backup_copy_asset_key
from wehub_backup.defs.backup.job import backup_supabase_to_vps
from wehub_backup.defs.egress import WARNING_SHARE, check_egress_budget, egress_observation, egress_usage
from wehub_backup.defs.failures import RunFailure, record_alert_delivery, run_failure_of, tag_failed_run
from wehub_backup.defs.lifecycle import run_target
from wehub_backup.defs.migration.job import migrate_vps_to_supabase
from wehub_backup.defs.names import RESTORE_ARCHIVE_JOB
from wehub_backup.defs.resources import AlertSettings

MONITORED_JOB_NAMES = frozenset({backup_supabase_to_vps.name, migrate_vps_to_supabase.name, RESTORE_ARCHIVE_JOB})


def find_run_failure(step_failures: list[dg.DagsterEvent], run_failure: dg.DagsterEvent) -> RunFailure:
    """The first failed step and its error; else the run's own failure (e.g. a crashed worker).

    A run marked failed from outside (Dagster's run monitoring, or the next run finding the
    working files of one whose process died) has a message but no failure data.
    """
    if step_failures:
        first = step_failures[0]
        return run_failure_of(first.step_key, first.step_failure_data.error)
    failure_data = run_failure.job_failure_data if run_failure.is_job_failure else None
    error = failure_data.error if failure_data is not None else None
    return run_failure_of(None, error, run_failure.message or "")


def failure_alert(context: dg.RunFailureSensorContext, dagster_url: str | None) -> AlertMessage:
    """The alert for the run this failure sensor tick is about."""
    run = context.dagster_run
    failure = find_run_failure(list(context.get_step_failure_events()), context.failure_event)
    return AlertMessage(
        job_name=run.job_name,
        run_id=run.run_id,
        failed_step=failure.step_key,
        target=run_target(run),
        cause=failure.cause(),
        run_url=run_url(dagster_url, run.run_id),
    )


# How often the daemon looks for failed runs: an alert within seconds, not Dagster's default half
# minute; each tick is one query of the run storage.
ALERT_INTERVAL_SECONDS = 10


@dg.run_failure_sensor(
    monitor_all_code_locations=True,
    minimum_interval_seconds=ALERT_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (webhook, e-mail, or the log) on every failed backup or migration run, with its failed "
    "step, target and one-line cause; tags the run with the cause and where the alert went.",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, alert_settings: AlertSettings) -> None:
    """Send one alert per failed backup or migration run to the configured channels.

    Every failed run is seen and the two jobs are picked by name, so a run recorded without a
    code-location origin (by an older version of the command line) still alerts. The run shows
    its cause (also when it failed outside its steps, where no failure hook ran) and where the
    alert went.
    """
    run = context.dagster_run
    if run.job_name in MONITORED_JOB_NAMES:
        alert = failure_alert(context, alert_settings.dagster_url)
        tag_failed_run(context.instance, run.run_id, alert.cause)
        results = deliver_alert(alert, alert_settings.channels(), log=context.log)
        record_alert_delivery(context.instance, run, results)


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


def last_copy_time(instance: dg.DagsterInstance, target: str) -> datetime | None:
    """When ``target``'s verified copy was last swapped in: its asset's latest materialization.

    Per target: a run into the testing copy (a Launchpad click, say) says nothing about how old
    the production copy is.
    """
    event = instance.get_latest_materialization_event(backup_copy_asset_key(target))
    return datetime.fromtimestamp(event.timestamp, UTC) if event else None


def _stale_period(target: str, last_success: datetime | None) -> str:
    return f"{target}@{last_success.isoformat() if last_success else 'never'}"


def check_backup_freshness(
    instance: dg.DagsterInstance,
    cursor: str | None,
    settings: AlertChannels,
    now: datetime,
    max_age: timedelta,
    log: logging.Logger,
    target: str,
) -> tuple[str, str]:
    """Alert once when ``target``'s copy is older than ``max_age``: its freshness policy failing.

    Dagster shows the policy's state on the asset; open-source Dagster does not alert on it, so
    this sensor does. Returns the new cursor and a sentence for the tick. If every channel
    failed to deliver, the period stays unreported so the next tick tries again.
    """
    job_name = backup_supabase_to_vps.name
    state = FreshnessCursor.parse(cursor, now)
    last_success = last_copy_time(instance, target)
    history = (
        f"last verified copy in {target} from {last_success:%Y-%m-%d %H:%M %Z}"
        if last_success
        else f"no verified copy in {target} since monitoring began {state.watching_since:%Y-%m-%d %H:%M %Z}"
    )
    if not backup_is_stale(last_success or state.watching_since, now, max_age):
        return state.serialize(), f"{history}: on time"
    period = _stale_period(target, last_success)
    if state.alerted_for == period:
        return state.serialize(), f"{history}: overdue, already alerted"
    alert = stale_backup_alert(job_name, last_success, state.watching_since, now, max_age, settings.dagster_url,
                               target)
    if none_delivered(deliver_alert(alert, settings, log=log)):
        return state.serialize(), f"{history}: overdue, alert not delivered, will retry"
    return replace(state, alerted_for=period).serialize(), f"{history}: overdue, alerted"


def _hourly(description: str) -> Callable[[Callable[..., object]], dg.SensorDefinition]:
    """A sensor ticking every hour, on by default."""
    return dg.sensor(minimum_interval_seconds=3600, default_status=dg.DefaultSensorStatus.RUNNING,
                     description=description)


@_hourly(f"Hourly: alerts once when the copy in the configured target ({TARGET_ENV}) is older than {MAX_AGE_ENV} "
         "(default 8 days), the copy's freshness policy; also when none was ever made.")
def backup_freshness_sensor(context: dg.SensorEvaluationContext, alert_settings: AlertSettings) -> dg.SkipReason:
    """Hourly: alert when no backup has succeeded within ``WEHUB_BACKUP_MAX_AGE_HOURS``."""
    cursor, outcome = check_backup_freshness(
        context.instance, context.cursor, alert_settings.channels(), datetime.now(UTC), max_backup_age(), context.log,
        configured_backup_target(),
    )
    context.update_cursor(cursor)
    return dg.SkipReason(outcome)


@_hourly(f"Hourly: records the billing cycle's Supabase egress (used, budget, projection) on the supabase_egress "
         f"asset, and warns once per cycle past {WARNING_SHARE:.0%} of {BUDGET_ENV}.")
def egress_budget_sensor(context: dg.SensorEvaluationContext, alert_settings: AlertSettings) -> dg.SensorResult:
    """Hourly: the cycle's egress on its asset; a warning once per billing cycle past 80% of the budget."""
    settings, now = EgressSettings.from_env(), datetime.now(UTC)
    cursor, outcome = check_egress_budget(
        context.instance, context.cursor, alert_settings.channels(), settings, now, context.log
    )
    observation = egress_observation(egress_usage(context.instance, settings, now))
    return dg.SensorResult(skip_reason=outcome, cursor=cursor, asset_events=[observation])
