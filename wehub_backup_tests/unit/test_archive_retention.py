"""Which archives retention prunes, from controlled timestamps and free space (no server, no files)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wehub_backup.archive.retention import Candidate, RetentionPolicy, choose_pruned

START = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)  # a Thursday
MB = 10**6


def daily_archives(days: int, database: str = "wehub", size: int = MB) -> list[Candidate]:
    """One archive a day at 02:00 for ``days`` days, oldest first."""
    return [Candidate(f"{database}-{i:03d}", database, START + timedelta(days=i), True, size) for i in range(days)]


def kept_days(archives: list[Candidate], policy: RetentionPolicy, free: int = 10**12) -> list[str]:
    pruned = {item.id for item in choose_pruned(archives, policy, free)}
    return [f"{a.created:%Y-%m-%d}" for a in archives if a.id not in pruned]


def test_daily_weekly_monthly_keep_the_newest_of_each_period() -> None:
    archives = daily_archives(200)  # 2026-01-01 .. 2026-07-19
    kept = kept_days(archives, RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=6))
    daily = [f"2026-07-{day:02d}" for day in range(13, 20)]
    # ISO weeks end on Sundays: the newest of each of the last four weeks (this one is daily already).
    weekly = ["2026-06-28", "2026-07-05", "2026-07-12"]
    # The newest of each month: July (today), June 30, May 31, April 30, March 31, February 28.
    monthly = ["2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31", "2026-06-30"]
    assert kept == sorted(set(daily + weekly + monthly))


def test_only_days_that_have_an_archive_count() -> None:
    """A gap (the VPS was down for a week) does not push older archives out early."""
    archives = [a for a in daily_archives(20) if not 5 <= (a.created - START).days < 15]
    kept = kept_days(archives, RetentionPolicy(keep_daily=7, keep_weekly=0, keep_monthly=0))
    assert kept == ["2026-01-04", "2026-01-05", "2026-01-16", "2026-01-17", "2026-01-18", "2026-01-19",
                    "2026-01-20"]


def test_several_archives_a_day_keep_the_newest() -> None:
    archives = [Candidate(f"a{i}", "wehub", START + timedelta(hours=i), True, MB) for i in range(5)]
    pruned = choose_pruned(archives, RetentionPolicy(keep_daily=1, keep_weekly=0, keep_monthly=0), 10**12)
    assert [item.id for item in pruned] == ["a0", "a1", "a2", "a3"]
    assert {item.reason for item in pruned} == {"retention"}


def test_zero_retention_still_keeps_the_newest_good_archive_of_each_database() -> None:
    archives = daily_archives(5) + daily_archives(3, database="wehub_backup_test")
    archives.append(Candidate("broken", "wehub", START + timedelta(days=9), False, MB))
    pruned = choose_pruned(archives, RetentionPolicy(0, 0, 0), 10**12)
    kept = {a.id for a in archives} - {item.id for item in pruned}
    assert kept == {"wehub-004", "wehub_backup_test-002"}
    assert next(item for item in pruned if item.id == "broken").reason == "incomplete"


def test_free_space_floor_prunes_oldest_kept_archives_but_never_the_newest_good() -> None:
    archives = daily_archives(7, size=100 * MB)
    policy = RetentionPolicy(keep_daily=7, keep_weekly=0, keep_monthly=0, min_free_bytes=350 * MB)
    pruned = choose_pruned(archives, policy, free_bytes=120 * MB)
    assert [(item.id, item.reason) for item in pruned] == [
        ("wehub-000", "free space"), ("wehub-001", "free space"), ("wehub-002", "free space")]
    # A floor no pruning can reach: everything but the newest good archive goes, and that one stays.
    pruned = choose_pruned(archives, RetentionPolicy(7, 0, 0, min_free_bytes=10**15), free_bytes=0)
    assert [item.id for item in pruned] == [f"wehub-{i:03d}" for i in range(6)]
