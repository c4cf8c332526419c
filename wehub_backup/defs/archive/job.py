"""The archive jobs: restore an archive into a VPS database, list the archives."""

from __future__ import annotations

import dagster as dg

from wehub_backup.defs.archive.ops import (
    cleanup_archive_restore,
    list_archives_step,
    plan_archive_restore,
    promote_restored_archive,
    restore_archive_into_staging,
    verify_archive_restore,
)
from wehub_backup.defs.backup.ops import clean_up_failed_backup
from wehub_backup.defs.names import LIST_ARCHIVES_JOB, RESTORE_ARCHIVE_JOB


@dg.job(
    name=RESTORE_ARCHIVE_JOB,
    description="Restore an archive (an older verified copy) into a VPS database: checksum first, then staging, "
    "fingerprint against the manifest, and the backup's swap.",
    executor_def=dg.in_process_executor,
    hooks={clean_up_failed_backup},
    tags={"wehub/kind": "restore"},
)
def restore_backup_archive() -> None:
    plan = plan_archive_restore()
    restored = restore_archive_into_staging(plan)
    rows = verify_archive_restore(plan, restored)
    promoted = promote_restored_archive(plan, rows)
    cleanup_archive_restore(plan, promoted)


@dg.job(
    name=LIST_ARCHIVES_JOB,
    description="List the archives in WEHUB_ARCHIVE_DIR, each checked against its manifest's SHA-256.",
    executor_def=dg.in_process_executor,
    tags={"wehub/kind": "archives"},
)
def list_backup_archives() -> None:
    list_archives_step()
