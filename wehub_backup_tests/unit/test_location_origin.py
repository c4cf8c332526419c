"""Command-line runs carry the origin the webserver gives the code location (workspace.yaml)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from dagster._core.workspace.load import location_origins_from_yaml_paths

from wehub_backup.cli import location_job_origin
from wehub_backup.defs.names import BACKUP_JOB, CODE_LOCATION

REPO = Path(__file__).resolve().parents[2]


def test_command_line_runs_name_the_workspace_code_location() -> None:
    [workspace_location] = location_origins_from_yaml_paths([str(REPO / "workspace.yaml")])
    cli_location = location_job_origin(BACKUP_JOB).repository_origin.code_location_origin
    assert cli_location.location_name == workspace_location.location_name == CODE_LOCATION
    assert cli_location.loadable_target_origin.module_name == workspace_location.loadable_target_origin.module_name
    dagster_settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]
    assert (dagster_settings["code_location_name"], dagster_settings["module_name"]) == (
        CODE_LOCATION, cli_location.loadable_target_origin.module_name)
