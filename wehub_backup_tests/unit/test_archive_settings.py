"""The archives resource: bound to the WEHUB_ARCHIVE* variables by name, defaults for empty ones, values checked."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from wehub_backup.config import ArchiveSettings
from wehub_backup.defs.resources import archive_store_from_env
from wehub_backup.errors import SettingsError

ARCHIVE_VARIABLES = ("WEHUB_ARCHIVE_DIR", "WEHUB_ARCHIVE", "WEHUB_ARCHIVE_KEEP_DAILY", "WEHUB_ARCHIVE_KEEP_WEEKLY",
                     "WEHUB_ARCHIVE_KEEP_MONTHLY", "WEHUB_ARCHIVE_MIN_FREE_MB", "WEHUB_ARCHIVE_REMOTE",
                     "WEHUB_ARCHIVE_RCLONE_CONFIG")


@pytest.fixture
def archive_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ARCHIVE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WEHUB_BACKUP_DIR", "/srv/wehub/backups")
    return monkeypatch


def test_empty_variables_keep_the_defaults(archive_env: pytest.MonkeyPatch) -> None:
    for name in ARCHIVE_VARIABLES:  # as the environment example lists them
        archive_env.setenv(name, "")
    assert archive_store_from_env().process_config_and_initialize().settings() == ArchiveSettings(
        directory=Path("/srv/wehub/supabase_archives"))


def test_set_variables_are_bound_by_name_and_read_at_run_time(archive_env: pytest.MonkeyPatch) -> None:
    values = {"WEHUB_ARCHIVE_DIR": "/srv/archives", "WEHUB_ARCHIVE": "off", "WEHUB_ARCHIVE_KEEP_DAILY": "3",
              "WEHUB_ARCHIVE_MIN_FREE_MB": "10", "WEHUB_ARCHIVE_REMOTE": "offsite:wehub",
              "WEHUB_ARCHIVE_RCLONE_CONFIG": "/etc/wehub_backup/rclone.conf"}
    for name, value in values.items():
        archive_env.setenv(name, value)
    store = archive_store_from_env()
    assert isinstance(store.remote, dg.EnvVar) and store.remote.env_var_name == "WEHUB_ARCHIVE_REMOTE"
    assert isinstance(store.rclone_config, dg.EnvVar) and isinstance(store.directory, dg.EnvVar)
    archive_env.setenv("WEHUB_ARCHIVE_KEEP_DAILY", "5")  # changed after the code location loaded
    assert store.process_config_and_initialize().settings() == ArchiveSettings(
        directory=Path("/srv/archives"), enabled=False, keep_daily=5, min_free_bytes=10 * 2**20,
        remote="offsite:wehub", rclone_config=Path("/etc/wehub_backup/rclone.conf"))


@pytest.mark.parametrize(("variable", "value", "reason"), [
    ("WEHUB_ARCHIVE_KEEP_WEEKLY", "1001", "WEHUB_ARCHIVE_KEEP_WEEKLY='1001' must be a whole number between 0 and 1000"),
    ("WEHUB_ARCHIVE_MIN_FREE_MB", "-1", "WEHUB_ARCHIVE_MIN_FREE_MB='-1' must be a whole number at least 0"),
    ("WEHUB_ARCHIVE", "sometimes", "WEHUB_ARCHIVE must be one of"),
    ("WEHUB_ARCHIVE_DIR", "/srv/arch\nives", "WEHUB_ARCHIVE_DIR holds a line feed"),
])
def test_a_wrong_value_is_refused_by_its_variable(archive_env: pytest.MonkeyPatch, variable: str, value: str,
                                                  reason: str) -> None:
    archive_env.setenv(variable, value)
    store = archive_store_from_env().process_config_and_initialize()
    with pytest.raises(SettingsError) as refused:
        store.settings()
    assert str(refused.value).startswith(reason)
