"""What the UI shows beside the definitions: sensor descriptions, and the variable behind every resource field."""

from __future__ import annotations

import dagster as dg

from wehub_backup.config import ALERT_STRING_VARIABLES, SUPABASE_VARIABLES, VPS_VARIABLES
from wehub_backup.defs.resources import AlertSettings, ArchiveStore, BackupWorkspace, PostgresDatabase
from wehub_backup.defs.sensors import alert_on_run_failure, backup_freshness_sensor, egress_budget_sensor


def test_every_sensor_says_what_it_does() -> None:
    sensors: list[dg.SensorDefinition] = [alert_on_run_failure, backup_freshness_sensor, egress_budget_sensor]
    assert all(len(sensor.description or "") > 40 for sensor in sensors)


def test_every_resource_field_names_the_variable_that_sets_it() -> None:
    database = PostgresDatabase.model_fields
    for field, supabase, vps in zip(("host", "port", "user", "dbname", "sslmode"), SUPABASE_VARIABLES, VPS_VARIABLES):
        assert f"{supabase} (supabase), {vps} (vps)" in (database[field].description or "")
    assert "LOCAL_DB_SSLMODE" in (database["sslmode"].description or "")
    assert "PGPASSFILE" in (database["passfile"].description or "")
    for field, variable in ALERT_STRING_VARIABLES.items():
        assert (AlertSettings.model_fields[field].description or "").startswith(f"Set by {variable}; null (unset): ")
    workspace = [BackupWorkspace.model_fields[f].description or "" for f in ("backup_dir", "backup_log", "pg_bindirs")]
    assert [text.split(";")[0].split(".")[0] for text in workspace] == [
        "Set by WEHUB_BACKUP_DIR", "Set by WEHUB_BACKUP_LOG", "Set by WEHUB_PG_BINDIRS"]
    archives = {field: info.description or "" for field, info in ArchiveStore.model_fields.items()}
    assert all(text.startswith("Set by WEHUB_ARCHIVE") for text in archives.values()), archives
