"""Target database names: what a backup may write, refused before anything is touched (no server)."""

from __future__ import annotations

import pytest

from wehub_backup.errors import InvalidTarget
from wehub_backup.run.targets import MAX_TARGET_LENGTH, generation_names, staging_name, validate_target_name


@pytest.mark.parametrize("name", ["wehub", "wehub_backup_test", "_copy", "w" * MAX_TARGET_LENGTH, "db2026"])
def test_plain_lower_case_identifiers_are_accepted(name: str) -> None:
    assert validate_target_name(name) == name


@pytest.mark.parametrize(("name", "reason"), [
    ("", "empty"),
    ("Wehub", "lower-case"),
    ("2wehub", "lower-case"),
    ("wehub;drop", "lower-case"),
    ("wehub backup", "lower-case"),
    ("wehub\nx", "lower-case"),
    ("w" * (MAX_TARGET_LENGTH + 1), "longer than"),
    ("postgres", "system database"),
    ("template1", "system database"),
    ("wehub__staging", "reserved"),
    ("wehub__previous", "reserved"),
    ("wehub__retired", "reserved"),
])
def test_unsafe_names_are_refused_with_the_reason(name: str, reason: str) -> None:
    with pytest.raises(InvalidTarget, match=reason):
        validate_target_name(name)


def test_a_forbidden_database_is_refused_by_what_it_is() -> None:
    with pytest.raises(InvalidTarget, match="it is Dagster's storage database"):
        validate_target_name("dagster", forbidden={"dagster": "Dagster's storage database"})


def test_generations_fit_postgres_name_limit() -> None:
    longest = "w" * MAX_TARGET_LENGTH
    assert staging_name(longest) == longest + "__staging"
    assert max(len(name.encode()) for name in generation_names(longest)) == 63
