"""The migration job, VPS -> Supabase."""

from __future__ import annotations

import dagster as dg

from wehub_backup.defs.migration.ops import (
    clean_up_failed_migration,
    cleanup_migration_files,
    dump_vps_database,
    plan_vps_migration,
    restore_into_supabase,
    verify_supabase_copy,
)
from wehub_backup.defs.names import MIGRATION_JOB


@dg.job(
    name=MIGRATION_JOB,
    description="Copy the VPS database's app schemas into Supabase in one transaction, then verify them.",
    executor_def=dg.in_process_executor,
    hooks={clean_up_failed_migration},
    tags={"wehub/kind": "migration"},
)
def migrate_vps_to_supabase() -> None:
    plan = plan_vps_migration()
    dump = dump_vps_database(plan)
    restored = restore_into_supabase(plan, dump)
    verified = verify_supabase_copy(plan, dump, restored)
    cleanup_migration_files(plan, verified)
