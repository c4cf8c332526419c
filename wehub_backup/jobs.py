"""The jobs: the weekly Supabase -> VPS backup, and the migration back, VPS -> Supabase."""

from __future__ import annotations

import dagster as dg

from wehub_backup.ops import (
    BACKUP_JOB,
    MIGRATION_JOB,
    cleanup_backup_files,
    cleanup_migration_files,
    clean_up_failed_backup,
    clean_up_failed_migration,
    dump_supabase_database,
    dump_vps_database,
    plan_supabase_backup,
    plan_vps_migration,
    promote_staging_database,
    recreate_staging_database,
    restore_into_staging_database,
    restore_into_supabase,
    verify_restored_database,
    verify_supabase_copy,
)


@dg.job(
    name=BACKUP_JOB,
    description="Copy the Supabase database into a VPS database, verify it, and only then swap it in.",
    executor_def=dg.in_process_executor,
    hooks={clean_up_failed_backup},
    tags={"wehub/kind": "backup"},
)
def backup_supabase_to_vps() -> None:
    plan = plan_supabase_backup()
    dump = dump_supabase_database(plan)
    staging = recreate_staging_database(plan, dump)
    restored = restore_into_staging_database(plan, dump, staging)
    verified = verify_restored_database(plan, dump, restored)
    promoted = promote_staging_database(plan, dump, verified)
    cleanup_backup_files(plan, promoted)


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
