"""The jobs: the weekly Supabase -> VPS backup (and, in its own module, the migration back)."""

from __future__ import annotations

import dagster as dg

from wehub_backup.ops import (
    BACKUP_JOB,
    cleanup_backup_files,
    clean_up_failed_backup,
    dump_supabase_database,
    plan_supabase_backup,
    promote_staging_database,
    recreate_staging_database,
    restore_into_staging_database,
    verify_restored_database,
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
