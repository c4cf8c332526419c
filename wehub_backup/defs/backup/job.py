"""The weekly Supabase -> VPS backup job."""

from __future__ import annotations

import dagster as dg

from wehub_backup.defs.archive.ops import archive_verified_copy
from wehub_backup.defs.backup.ops import (
    clean_up_failed_backup,
    cleanup_backup_files,
    dump_supabase_database,
    plan_supabase_backup,
    promote_staging_database,
    recreate_staging_database,
    restore_into_staging_database,
    verify_restored_database,
)
from wehub_backup.defs.names import BACKUP_JOB


@dg.job(
    name=BACKUP_JOB,
    description="Copy the Supabase database into a VPS database, verify it, and only then swap it in; then "
    "archive the verified copy under the run's lock (an archive failure alerts, the backup stays a success) "
    "and clean up.",
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
    archived = archive_verified_copy(plan, promoted=promoted)
    cleanup_backup_files(plan, promoted, archived=archived)
