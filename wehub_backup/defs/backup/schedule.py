"""The backup schedules: a weekly full copy, and a daily incremental one on the other days.

The plan's cron line ``0 2 * * 0 backup_supabase_to_vps.sh [TARGET]`` becomes a Dagster
schedule: Sunday 02:00 in ``WEHUB_SCHEDULE_TIMEZONE``, a full copy, on by default. From Monday
to Saturday at the same hour an incremental run fetches only the chunks that changed, so a
disaster loses a day of data instead of up to a week, inside the same egress budget (it is on
by default; ``WEHUB_BACKUP_DAILY_INCREMENTAL=off`` leaves it stopped). The target database is
read from ``WEHUB_BACKUP_TARGET_DB`` each time a schedule fires, so moving from the testing
phase (``wehub_backup_test``) to production (``wehub``) is an environment change, not a code edit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from wehub_backup.config import (
    DAILY_INCREMENTAL_ENV,
    PRODUCTION_TARGET,
    TARGET_ENV,
    TESTING_TARGET,
    TIMEZONE_ENV,
    configured_backup_target,
    flag,
    schedule_timezone,
)
from wehub_backup.defs.backup.config import backup_run_config
from wehub_backup.defs.backup.job import backup_supabase_to_vps
from wehub_backup.defs.names import LAUNCHED_BY_TAG, TARGET_TAG

WEEKLY_BACKUP_CRON = "0 2 * * 0"
DAILY_INCREMENTAL_CRON = "0 2 * * 1-6"
_TARGET = f"the VPS database named by {TARGET_ENV} (default {TESTING_TARGET}; {PRODUCTION_TARGET} in production)"


def build_weekly_backup_schedule(environ: Mapping[str, str] = os.environ) -> dg.ScheduleDefinition:
    """The weekly full copy; the time zone is fixed when the code location loads, the target at each tick."""
    return _backup_schedule(
        "weekly_backup_schedule", WEEKLY_BACKUP_CRON, "full", dg.DefaultScheduleStatus.RUNNING, environ,
        f"Sunday 02:00 ({TIMEZONE_ENV}, default UTC): a full backup of Supabase into {_TARGET}.")


def build_daily_incremental_schedule(environ: Mapping[str, str] = os.environ) -> dg.ScheduleDefinition:
    """The incremental copy of the other six days: running unless ``WEHUB_BACKUP_DAILY_INCREMENTAL`` is off."""
    status = dg.DefaultScheduleStatus.RUNNING if flag(DAILY_INCREMENTAL_ENV, True, environ) \
        else dg.DefaultScheduleStatus.STOPPED
    return _backup_schedule(
        "daily_incremental_backup_schedule", DAILY_INCREMENTAL_CRON, "incremental", status, environ,
        f"Monday to Saturday 02:00 ({TIMEZONE_ENV}): an incremental backup into {_TARGET}, only the chunks "
        f"changed since the verified copy (full when that copy cannot be built on; {DAILY_INCREMENTAL_ENV}=off "
        "leaves it stopped).")


def _backup_schedule(name: str, cron: str, mode: str, status: dg.DefaultScheduleStatus,
                     environ: Mapping[str, str], description: str) -> dg.ScheduleDefinition:
    @dg.schedule(name=name, job=backup_supabase_to_vps, cron_schedule=cron,
                 execution_timezone=schedule_timezone(environ), default_status=status, description=description)
    def backup_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        target = configured_backup_target()
        return dg.RunRequest(run_config=backup_run_config(target, mode=mode),
                             tags={TARGET_TAG: target, LAUNCHED_BY_TAG: "schedule"})

    return backup_schedule
