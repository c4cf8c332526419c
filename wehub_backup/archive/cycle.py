"""After a verified backup: archive the copy, prune by the retention policy, copy off-site.

The local archive comes first and does not depend on the remote: a remote that is down or
misconfigured costs the off-site copy (reported, and tried again by the next run), never the
local history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from wehub_backup.archive.make import ArchiveRequest, make_archive
from wehub_backup.archive.offsite import Offsite, UploadOutcome, failed_uploads, remove_remote_copy, upload_pending
from wehub_backup.archive.retention import Pruned, RetentionPolicy, apply_retention
from wehub_backup.archive.store import Manifest, StoredArchive, list_archives
from wehub_backup.config import ArchiveSettings
from wehub_backup.errors import WehubError
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.run.workdir import free_bytes


@dataclass
class ArchiveCycle:
    manifest: Manifest
    pruned: list[Pruned]
    kept: list[StoredArchive]
    uploads: list[UploadOutcome] = field(default_factory=list)
    offsite_problem: WehubError | None = None  # the off-site copy failed (the local archive is made)


def retention_policy(settings: ArchiveSettings) -> RetentionPolicy:
    return RetentionPolicy(settings.keep_daily, settings.keep_weekly, settings.keep_monthly, settings.min_free_bytes)


def archive_and_prune(request: ArchiveRequest, vps: ConnectionInfo, settings: ArchiveSettings,
                          log: Callable[[str], None], *, low_priority: bool = True,
                          now: datetime | None = None) -> ArchiveCycle:
    """Make the archive, apply retention, then bring the off-site copy up to date."""
    manifest = make_archive(request, vps, settings.directory, log, low_priority=low_priority, now=now)
    before = list_archives(settings.directory)
    pruned = apply_retention(before, retention_policy(settings), free_bytes(settings.directory), log)
    gone = {item.id for item in pruned}
    cycle = ArchiveCycle(manifest, pruned, [archive for archive in before if archive.id not in gone])
    try:
        offsite = Offsite.from_settings(settings)
        if offsite is not None:
            offsite.require_encrypted()
            for archive in before:
                if archive.id in gone and archive.offsite.get("state") == "uploaded":
                    remove_remote_copy(archive.id, offsite, log)
            cycle.uploads = upload_pending(cycle.kept, offsite, log)
            cycle.offsite_problem = failed_uploads(cycle.uploads)
    except WehubError as error:
        cycle.offsite_problem = error
    return cycle
