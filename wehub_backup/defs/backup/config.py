"""What a backup run is told: its target and scope, and how promote treats connected sessions."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from wehub_backup.config import (
    BACKUP_MODE_ENV,
    COPY_ENGINE_ENV,
    PRODUCTION_TARGET,
    TARGET_ENV,
    TESTING_TARGET,
    configured_backup_target,
)
from wehub_backup.supabase.schemas import DEFAULT_EXCLUDED_SCHEMAS, DEFAULT_EXCLUDED_TABLES


class BackupConfig(dg.Config):
    """What to back up into: the VPS database that will hold the copy, and what to leave out."""

    # The configured target, read when the code location loads: what the Launchpad pre-fills, so a
    # click refreshes the copy the schedule refreshes (the services restart when the setting changes).
    target_database: str = Field(
        default=configured_backup_target(),
        description=f"VPS database that receives the verified copy: {TARGET_ENV} by default "
        f"({TESTING_TARGET} while testing, {PRODUCTION_TARGET} in production).",
    )
    excluded_schemas: list[str] = Field(
        default=list(DEFAULT_EXCLUDED_SCHEMAS), description="Supabase-internal schemas not copied."
    )
    excluded_tables: list[str] = Field(
        default=list(DEFAULT_EXCLUDED_TABLES), description="schema.table names not copied (service bookkeeping)."
    )
    parallel_jobs: int = Field(default=0, description="pg_dump/pg_restore workers; 0 sizes them to the CPU count (max 4).")
    copy_engine: str = Field(
        default="", description=f"'stream' or 'archive' for this run; empty: {COPY_ENGINE_ENV} ('archive' when unset)."
    )
    mode: str = Field(
        default="", description=f"'full' or 'incremental' for this run; empty: {BACKUP_MODE_ENV} ('full' when unset). "
        "An incremental run is full when the current copy cannot be built on (see the README's incremental backups).",
    )
    force_over_budget: bool = Field(
        default=False,
        description="Run even if the expected Supabase egress would exceed WEHUB_EGRESS_BUDGET_BYTES this billing cycle.",
    )
    adopt_existing_target: bool = Field(
        default=False,
        description="Let this run replace a target database (and drop its __staging/__previous/__retired) that "
                    "is not marked as this project's copy of this source: a copy made before copies were "
                    "marked, or a database handed over on purpose. Set it for one run only.",
    )


class PromoteConfig(dg.Config):
    """How to treat the application's sessions on the old copy when the new one is swapped in."""

    on_connected_sessions: str = Field(
        default="wait",
        description="'wait' for sessions on the target, its staging copy and __previous to end, or 'terminate' them.",
    )
    connected_sessions_timeout_seconds: int = Field(
        default=300, description="How long 'wait' waits, or 'terminate' keeps ending sessions, before giving up."
    )


def backup_run_config(target: str, adopt: bool = False, mode: str = "") -> dict:
    """Run config of one backup into ``target``, in ``mode`` if given (else the configured one): the
    settings a scheduled run needs (adopting a database the project did not mark is an operator's
    one-off choice, never the schedule's)."""
    config: dict = {"target_database": target}
    if adopt:
        config["adopt_existing_target"] = True
    if mode:
        config["mode"] = mode
    return {"ops": {"plan_supabase_backup": {"config": config}}}
