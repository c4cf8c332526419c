"""The code location: jobs, schedules, sensors and the resources they read from the environment."""

from __future__ import annotations

import dagster as dg

from wehub_backup.defs.archive.job import list_backup_archives, restore_backup_archive
from wehub_backup.defs.archive.ops import archives_asset_spec
from wehub_backup.defs.assets import backup_copy_asset_specs, egress_asset_spec
from wehub_backup.defs.backup.job import backup_supabase_to_vps
from wehub_backup.defs.backup.schedule import build_daily_incremental_schedule, build_weekly_backup_schedule
from wehub_backup.defs.migration.job import migrate_vps_to_supabase
from wehub_backup.defs.resources import (
    alert_settings_from_env,
    archive_store_from_env,
    backup_workspace_from_env,
    in_run_io_manager,
    supabase_database_from_env,
    vps_database_from_env,
)
from wehub_backup.defs.sensors import alert_on_run_failure, backup_freshness_sensor, egress_budget_sensor
from wehub_backup.files import private_umask


def build_definitions() -> dg.Definitions:
    """Assemble the code location; resources are bound to environment variables read at run time."""
    return dg.Definitions(
        assets=[*backup_copy_asset_specs(), egress_asset_spec(), archives_asset_spec()],
        jobs=[backup_supabase_to_vps, migrate_vps_to_supabase, restore_backup_archive, list_backup_archives],
        schedules=[build_weekly_backup_schedule(), build_daily_incremental_schedule()],
        sensors=[alert_on_run_failure, backup_freshness_sensor, egress_budget_sensor],
        resources={
            "supabase": supabase_database_from_env(),
            "vps": vps_database_from_env(),
            "workspace": backup_workspace_from_env(),
            "io_manager": in_run_io_manager,
            "alert_settings": alert_settings_from_env(),
            "archives": archive_store_from_env(),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location as Dagster loads it (code server, run workers).

    Dagster's own files under ``DAGSTER_HOME`` (SQLite storage, compute logs) are created
    with the process's umask, so loading the location makes that umask private first; the
    systemd units set ``UMask=0077`` for the webserver and the daemon themselves.
    """
    private_umask()
    return build_definitions()


def backup_job_with_resources() -> dg.JobDefinition:
    """The backup job with its resources bound: what the command line executes (reconstructable).

    Built afresh, so the resources follow the environment at the time of the run.
    """
    return build_definitions().get_job_def("backup_supabase_to_vps")


def migration_job_with_resources() -> dg.JobDefinition:
    """The migration job with its resources bound: what ``wehub-backup migrate`` executes (reconstructable)."""
    return build_definitions().get_job_def("migrate_vps_to_supabase")


def restore_archive_job_with_resources() -> dg.JobDefinition:
    """The restore job with its resources bound: what ``wehub-backup restore-archive`` executes (reconstructable)."""
    return build_definitions().get_job_def("restore_backup_archive")
