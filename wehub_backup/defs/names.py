"""Names the UI shows and the run records carry: the jobs, and the tags of a run."""

from __future__ import annotations

BACKUP_JOB = "backup_supabase_to_vps"
MIGRATION_JOB = "migrate_vps_to_supabase"
TARGET_TAG = "wehub/target"
LAUNCHED_BY_TAG = "wehub/launched_by"
