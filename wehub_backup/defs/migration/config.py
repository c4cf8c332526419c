"""What a migration run is told: which schemas, and whether to replace what Supabase holds."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

# The advisory-lock name of the migration target: one migration into Supabase at a time.
MIGRATION_LOCK = "supabase"


class MigrationConfig(dg.Config):
    """What to migrate from the VPS database (LOCAL_DB_NAME) into Supabase, and whether to replace what is there."""

    overwrite: bool = Field(
        default=False,
        description="Replace app schemas that already hold objects on Supabase (after a failover: yes).",
    )
    app_schemas: list[str] = Field(
        default=[], description="VPS schemas to migrate; empty means every schema Supabase does not manage."
    )
    excluded_tables: list[str] = Field(default=[], description="schema.table names not migrated.")
    parallel_jobs: int = Field(default=0, description="pg_dump workers; 0 sizes them to the CPU count (max 4).")
    new_project: bool = Field(
        default=False,
        description="Supabase is a new project (the original is lost): also create the VPS copy's triggers and "
                    "policies on Supabase's tables (auth.users, storage.objects) and its storage buckets.",
    )
    with_users: bool = Field(
        default=False, description="With new_project: carry the VPS copy's users too (auth.users, auth.identities).",
    )


def migration_run_config(overwrite: bool, new_project: bool = False, with_users: bool = False) -> dict:
    """Run config of a migration run, as the command line launches it."""
    config = {"overwrite": overwrite, "new_project": new_project, "with_users": with_users}
    return {"ops": {"plan_vps_migration": {"config": config}}}
