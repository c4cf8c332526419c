"""Which archives to keep: the newest of each of the last N days, N weeks and N months that have
one, per VPS database, and whatever a free-space floor on the archive disk allows.

Days, ISO weeks and months are counted in UTC over the archives that exist (as ``restic
forget --keep-daily`` does), so a missed week does not push an older archive out early. The
newest good archive of each database is never pruned, neither by the policy nor for space:
it is the one a restore after a disaster needs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from wehub_backup.archive.store import StoredArchive


@dataclass(frozen=True)
class RetentionPolicy:
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 6
    min_free_bytes: int = 0  # archives beyond the newest good one go, oldest first, while less is free


@dataclass(frozen=True)
class Pruned:
    id: str
    reason: str  # "retention", "incomplete" (its file is not the manifest's size) or "free space"

    def __str__(self) -> str:
        return f"{self.id} ({self.reason})"


_BUCKETS: tuple[tuple[str, Callable[[datetime], tuple]], ...] = (
    ("daily", lambda moment: (moment.year, moment.month, moment.day)),
    ("weekly", lambda moment: moment.isocalendar()[:2]),
    ("monthly", lambda moment: (moment.year, moment.month)),
)


@dataclass(frozen=True)
class Candidate:
    """What the policy needs to know of an archive: no file is read to decide."""

    id: str
    database: str
    created: datetime
    good: bool
    size: int


def choose_pruned(archives: Sequence[Candidate], policy: RetentionPolicy, free_bytes: int) -> list[Pruned]:
    """The archives to delete, oldest first; a plain function of the archives and the free space."""
    kept: set[str] = set()
    protected: set[str] = set()
    for database in {archive.database for archive in archives}:
        newest_first = sorted((a for a in archives if a.database == database and a.good),
                              key=lambda a: a.created, reverse=True)
        if newest_first:
            protected.add(newest_first[0].id)
        for label, bucket_of in _BUCKETS:
            kept.update(_newest_per_bucket(newest_first, bucket_of, getattr(policy, f"keep_{label}")))
    kept |= protected
    oldest_first = sorted(archives, key=lambda a: a.created)
    pruned = [Pruned(a.id, "retention" if a.good else "incomplete") for a in oldest_first if a.id not in kept]
    free = free_bytes + sum(a.size for a in oldest_first if a.id not in kept)
    for archive in oldest_first:
        if free >= policy.min_free_bytes:
            break
        if archive.id in kept and archive.id not in protected:
            pruned.append(Pruned(archive.id, "free space"))
            free += archive.size
    return pruned


def _newest_per_bucket(newest_first: list[Candidate], bucket_of: Callable[[datetime], tuple], count: int) -> list[str]:
    """The newest archive of each of the latest ``count`` buckets (days, weeks, months) that have one."""
    chosen: dict[tuple, str] = {}
    for archive in newest_first:
        bucket = bucket_of(archive.created)
        if bucket not in chosen:
            if len(chosen) == count:
                break
            chosen[bucket] = archive.id
    return list(chosen.values())


def candidate(archive: StoredArchive) -> Candidate:
    return Candidate(archive.id, archive.manifest.database, archive.manifest.created, archive.good,
                     archive.manifest.archive_bytes)


def apply_retention(archives: Sequence[StoredArchive], policy: RetentionPolicy, free_bytes: int,
                    log: Callable[[str], None]) -> list[Pruned]:
    """Delete what ``choose_pruned`` picks, saying so for each one."""
    by_id = {archive.id: archive for archive in archives}
    pruned = choose_pruned([candidate(archive) for archive in archives], policy, free_bytes)
    for item in pruned:
        shutil.rmtree(by_id[item.id].path)
        log(f"pruned archive {item}")
    return pruned
