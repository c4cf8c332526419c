"""The Dagster layer of the archives: the backup job's archive step, the restore and listing jobs."""
