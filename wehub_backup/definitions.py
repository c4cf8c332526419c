"""The code location: jobs, schedules, sensors and the resources they read from the environment."""

from __future__ import annotations

import dagster as dg

from wehub_backup.jobs import backup_supabase_to_vps
from wehub_backup.settings import backup_workspace_from_env, supabase_database_from_env, vps_database_from_env


def build_definitions() -> dg.Definitions:
    """Assemble the code location; resources are bound to environment variables read at run time."""
    return dg.Definitions(
        jobs=[backup_supabase_to_vps],
        resources={
            "supabase": supabase_database_from_env(),
            "vps": vps_database_from_env(),
            "workspace": backup_workspace_from_env(),
            "io_manager": dg.mem_io_manager,
        },
    )


defs = build_definitions()


def backup_job_with_resources() -> dg.JobDefinition:
    """The backup job with its resources bound: what the command line executes (reconstructable)."""
    return defs.get_job_def("backup_supabase_to_vps")
