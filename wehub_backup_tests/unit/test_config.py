"""Settings read from the environment: defaults, and a typo refused by the variable's name (no server)."""

from __future__ import annotations

from datetime import timedelta

from wehub_backup.config import max_backup_age


def test_max_backup_age_defaults_to_eight_days() -> None:
    assert max_backup_age({}) == timedelta(days=8)
    assert max_backup_age({"WEHUB_BACKUP_MAX_AGE_HOURS": "36"}) == timedelta(hours=36)
