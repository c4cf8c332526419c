"""What the archive jobs are told: which archive to restore into which VPS database, and how to list them."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class RestoreArchiveConfig(dg.Config):
    """Which archive goes into which VPS database (``wehub-backup archives`` lists the IDs)."""

    archive_id: str = Field(description="The archive to restore, e.g. 20261206T020512Z-wehub.")
    target_database: str = Field(description="The VPS database that receives it: a new one, or (replace_existing) "
                                 "a copy this project made of the same source.")
    replace_existing: bool = Field(
        default=False,
        description="Replace an existing target through staging -> verify -> swap; its old copy stays as "
                    "<target>__previous. Only a copy this project made of the archive's source is replaced.",
    )
    parallel_jobs: int = Field(default=0, description="pg_restore workers; 0 sizes them to the CPU count (max 4).")


class ListArchivesConfig(dg.Config):
    """Whether the listing reads every archive to check its SHA-256 (slow for large archives)."""

    verify_checksums: bool = Field(default=True, description="Read each archive and compare its SHA-256 "
                                   "with its manifest.")


def restore_archive_run_config(archive_id: str, target: str, replace: bool = False) -> dict:
    return {"ops": {"plan_archive_restore": {"config": {
        "archive_id": archive_id, "target_database": target, "replace_existing": replace}}}}
