"""Names the UI shows and the run records carry: the code location, the jobs, and the tags of a run."""

from __future__ import annotations

# As workspace.yaml and pyproject.toml's [tool.dagster] name them: a run recorded under this
# location and repository is listed on the job's page and can be re-executed from the UI.
CODE_LOCATION = "wehub_backup"
DEFINITIONS_MODULE = "wehub_backup.definitions"
REPOSITORY = "__repository__"
BACKUP_JOB = "backup_supabase_to_vps"
MIGRATION_JOB = "migrate_vps_to_supabase"
RESTORE_ARCHIVE_JOB = "restore_backup_archive"
LIST_ARCHIVES_JOB = "list_backup_archives"
TARGET_TAG = "wehub/target"
LAUNCHED_BY_TAG = "wehub/launched_by"
MODE_TAG = "wehub/mode"  # a backup run's mode as decided: "full" or "incremental"
FAILURE_TAG = "wehub/failure"
FAILURE_KIND_TAG = "wehub/failure_kind"
ALERT_TAG = "wehub/alert"
SUMMARY_TAG = "wehub/summary"
ARCHIVE_TAG = "wehub/archive"
ARCHIVE_ALERT_TAG = "wehub/archive_alert"
