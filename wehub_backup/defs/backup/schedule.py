"""The weekly backup schedule.

The plan's cron line ``0 2 * * 0 backup_supabase_to_vps.sh [TARGET]`` becomes a Dagster
schedule: Sunday 02:00 in ``WEHUB_SCHEDULE_TIMEZONE``, on by default. Its target database is
read from ``WEHUB_BACKUP_TARGET_DB`` each time the schedule fires, so moving from the testing
phase (``wehub_backup_test``) to production (``wehub``) is an environment change, not a code edit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from wehub_backup.config import (
    PRODUCTION_TARGET,
    TARGET_ENV,
    TESTING_TARGET,
    TIMEZONE_ENV,
    configured_backup_target,
    schedule_timezone,
)
from wehub_backup.defs.backup.config import backup_run_config
from wehub_backup.defs.backup.job import backup_supabase_to_vps
from wehub_backup.defs.names import LAUNCHED_BY_TAG, TARGET_TAG

WEEKLY_BACKUP_CRON = "0 2 * * 0"


def build_weekly_backup_schedule(environ: Mapping[str, str] = os.environ) -> dg.ScheduleDefinition:
    """The weekly schedule; the time zone is fixed when the code location loads, the target at each tick."""

    @dg.schedule(
        name="weekly_backup_schedule",
        job=backup_supabase_to_vps,
        cron_schedule=WEEKLY_BACKUP_CRON,
        execution_timezone=schedule_timezone(environ),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Sunday 02:00 ({TIMEZONE_ENV}, default UTC): back up Supabase into the VPS database named by "
            f"{TARGET_ENV} (default {TESTING_TARGET}; {PRODUCTION_TARGET} in production)."
        ),
    )
    def weekly_backup_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        target = configured_backup_target()
        return dg.RunRequest(
            run_config=backup_run_config(target),
            tags={TARGET_TAG: target, LAUNCHED_BY_TAG: "schedule"},
        )

    return weekly_backup_schedule
