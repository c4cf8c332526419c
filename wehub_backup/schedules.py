"""The weekly backup schedule and the backup copies it keeps fresh.

The plan's cron line ``0 2 * * 0 backup_supabase_to_vps.sh [TARGET]`` becomes a Dagster
schedule: Sunday 02:00 in ``WEHUB_SCHEDULE_TIMEZONE``, on by default. Its target database is
read from ``WEHUB_BACKUP_TARGET_DB`` each time the schedule fires, so moving from the testing
phase (``wehub_backup_test``) to production (``wehub``) is an environment change, not a code edit.
"""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Mapping

import dagster as dg

from wehub_backup import databases
from wehub_backup.jobs import backup_supabase_to_vps
from wehub_backup.ops import TARGET_TAG, backup_copy_asset_key

WEEKLY_BACKUP_CRON = "0 2 * * 0"
TIMEZONE_ENV = "WEHUB_SCHEDULE_TIMEZONE"
TARGET_ENV = "WEHUB_BACKUP_TARGET_DB"
DEFAULT_TIMEZONE = "UTC"
TESTING_TARGET = "wehub_backup_test"
PRODUCTION_TARGET = "wehub"
LAUNCHED_BY_TAG = "wehub/launched_by"


class ScheduleSettingsError(ValueError):
    """A schedule setting in the environment is unusable; the code location refuses to load."""


def schedule_timezone(environ: Mapping[str, str] = os.environ) -> str:
    """The IANA zone the schedule's 02:00 is read in; a typo stops loading instead of silently running in UTC."""
    name = environ.get(TIMEZONE_ENV, "").strip() or DEFAULT_TIMEZONE
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ScheduleSettingsError(
            f"{TIMEZONE_ENV}={name!r} is not a time zone name; use an IANA name such as UTC or Europe/Berlin"
        ) from None
    return name


def configured_backup_target(environ: Mapping[str, str] = os.environ) -> str:
    """The VPS database scheduled backups write into: the testing copy until production is switched on."""
    return environ.get(TARGET_ENV, "").strip() or TESTING_TARGET


def backup_run_config(target: str) -> dict:
    """Run config of one backup into ``target``: the only setting a scheduled run needs."""
    return {"ops": {"plan_supabase_backup": {"config": {"target_database": target}}}}


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


def backup_copy_asset_specs(environ: Mapping[str, str] = os.environ) -> list[dg.AssetSpec]:
    """Declared copies (testing, production and the configured target), so the asset pages exist and
    plot each successful run's egress, size and row metadata even before the first materialization.

    A configured target with an invalid name is left out rather than stopping the code location
    from loading: its scheduled run then fails, and the failure alert names the problem.
    """
    targets = {TESTING_TARGET, PRODUCTION_TARGET}
    try:
        targets.add(databases.validate_target_name(configured_backup_target(environ)))
    except databases.InvalidTarget:
        pass
    return [
        dg.AssetSpec(
            key=backup_copy_asset_key(target),
            description=f"Verified copy of the Supabase database in VPS database {target}, "
            "refreshed by each successful backup run.",
            group_name="vps_backup_copies",
            kinds={"postgres"},
        )
        for target in sorted(targets)
    ]
