"""The weekly schedule: when it fires in a configured time zone, and what it launches."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from wehub_backup.config import schedule_timezone
from wehub_backup.definitions import build_definitions
from wehub_backup.defs.assets import backup_copy_asset_key, backup_copy_asset_specs
from wehub_backup.defs.backup.schedule import build_daily_incremental_schedule, build_weekly_backup_schedule
from wehub_backup.defs.names import BACKUP_JOB
from wehub_backup.errors import SettingsError

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(autouse=True)
def default_schedule_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the defaults: UTC, the testing target."""
    monkeypatch.delenv("WEHUB_SCHEDULE_TIMEZONE", raising=False)
    monkeypatch.delenv("WEHUB_BACKUP_TARGET_DB", raising=False)


def ticks(schedule: dg.ScheduleDefinition, after: datetime, count: int) -> list[datetime]:
    """The schedule's next ``count`` fire times after ``after``, in UTC, as Dagster's scheduler computes them."""
    times = cron_string_iterator(after.timestamp(), schedule.cron_schedule, schedule.execution_timezone)
    return [next(times).astimezone(UTC) for _ in range(count)]


def run_request(schedule: dg.ScheduleDefinition) -> dg.RunRequest:
    [request] = schedule.evaluate_tick(dg.build_schedule_context()).run_requests or []
    return request


def test_code_location_has_the_weekly_schedule_running_by_default() -> None:
    schedule = build_definitions().resolve_schedule_def("weekly_backup_schedule")
    assert schedule.cron_schedule == "0 2 * * 0"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == BACKUP_JOB


def test_target_is_read_from_the_environment_when_the_schedule_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_DB_HOST", "db.example.supabase.co")  # the job's resources need it to validate
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("weekly_backup_schedule")
    job = defs.get_job_def(BACKUP_JOB)

    testing = run_request(schedule)
    monkeypatch.setenv("WEHUB_BACKUP_TARGET_DB", "wehub")
    production = run_request(schedule)

    for request, target in ((testing, "wehub_backup_test"), (production, "wehub")):
        assert request.run_config == {"ops": {"plan_supabase_backup": {"config": {"target_database": target,
                                                                                 "mode": "full"}}}}
        assert request.tags["wehub/target"] == target
        assert request.tags["wehub/launched_by"] == "schedule"
        assert dg.validate_run_config(job, request.run_config)["ops"]["plan_supabase_backup"]["config"][
            "target_database"] == target


@pytest.mark.parametrize(
    ("zone", "first_tick_utc"),
    [
        ("UTC", datetime(2025, 6, 8, 2, 0, tzinfo=UTC)),
        ("America/New_York", datetime(2025, 6, 8, 6, 0, tzinfo=UTC)),
        ("Europe/Berlin", datetime(2025, 6, 8, 0, 0, tzinfo=UTC)),
        ("Asia/Kolkata", datetime(2025, 6, 7, 20, 30, tzinfo=UTC)),
    ],
)
def test_fires_sunday_two_oclock_in_the_configured_zone(
    monkeypatch: pytest.MonkeyPatch, zone: str, first_tick_utc: datetime
) -> None:
    monkeypatch.setenv("WEHUB_SCHEDULE_TIMEZONE", zone)
    schedule = build_definitions().resolve_schedule_def("weekly_backup_schedule")
    assert schedule.execution_timezone == zone

    wednesday = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)
    assert ticks(schedule, wednesday, 3) == [first_tick_utc + timedelta(weeks=week) for week in range(3)]


def test_daylight_saving_changes_neither_skip_nor_repeat_a_week() -> None:
    schedule = build_weekly_backup_schedule({"WEHUB_SCHEDULE_TIMEZONE": "Europe/Berlin"})
    year = ticks(schedule, datetime(2025, 1, 1, tzinfo=UTC), 52)
    local = [moment.astimezone(BERLIN) for moment in year]
    assert all(moment.weekday() == 6 for moment in local)
    assert len({moment.date() for moment in local}) == 52
    assert [moment.isocalendar().week for moment in local] == list(range(1, 53))
    # 02:00 does not exist on 30 March (clocks jump to 03:00): that week's backup runs at 03:00.
    assert {moment.hour for moment in local if moment.date().isoformat() != "2025-03-30"} == {2}
    assert [moment.hour for moment in local if moment.date().isoformat() == "2025-03-30"] == [3]


def test_invalid_timezone_stops_the_code_location_from_loading(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="WEHUB_SCHEDULE_TIMEZONE='Europe/Berln' is not a time zone name"):
        schedule_timezone({"WEHUB_SCHEDULE_TIMEZONE": "Europe/Berln"})

    home = tmp_path / "dagster_home"
    home.mkdir()
    environment = {**os.environ, "WEHUB_SCHEDULE_TIMEZONE": "Mars/Olympus_Mons", "DAGSTER_HOME": str(home)}
    # Loaded as Dagster loads the code location (the definitions are built when it is loaded).
    loading = subprocess.run([str(Path(sys.executable).with_name("dagster")), "definitions", "validate",
                              "-m", "wehub_backup.definitions"],
                             capture_output=True, text=True, timeout=120, env=environment)
    assert loading.returncode != 0
    assert ("SettingsError: WEHUB_SCHEDULE_TIMEZONE='Mars/Olympus_Mons' is not a time zone name; "
            "use an IANA name such as UTC or Europe/Berlin") in loading.stdout + loading.stderr


def test_backup_copies_are_declared_assets(monkeypatch: pytest.MonkeyPatch) -> None:
    testing, production = backup_copy_asset_key("wehub_backup_test"), backup_copy_asset_key("wehub")
    assert set(build_definitions().resolve_all_asset_keys()) >= {testing, production}

    monkeypatch.setenv("WEHUB_BACKUP_TARGET_DB", "wehub_weekly")
    assert {spec.key for spec in backup_copy_asset_specs()} == {testing, production, backup_copy_asset_key("wehub_weekly")}
    # A mistyped target does not stop the code location from loading: its run fails and alerts instead.
    assert {spec.key for spec in backup_copy_asset_specs({"WEHUB_BACKUP_TARGET_DB": "Wehub-Prod"})} == {testing, production}


def test_copies_carry_dagsters_freshness_policy_of_the_configured_maximum_age() -> None:
    windows = {spec.freshness_policy.fail_window.to_timedelta() for spec in backup_copy_asset_specs({})}
    assert windows == {timedelta(days=8)}
    two_days = backup_copy_asset_specs({"WEHUB_BACKUP_MAX_AGE_HOURS": "48"})
    assert {spec.freshness_policy.fail_window.to_timedelta() for spec in two_days} == {timedelta(days=2)}
    assert {spec.freshness_policy for spec in backup_copy_asset_specs({"WEHUB_BACKUP_MAX_AGE_HOURS": "soon"})} == {None}


def test_launchpad_default_target_is_the_configured_one() -> None:
    """The op's config default is read when the code location loads, as the webserver's code server does."""
    show_default = ("from wehub_backup.definitions import build_definitions; "
                    "from wehub_backup.defs.names import BACKUP_JOB; "
                    "schema = build_definitions().get_job_def(BACKUP_JOB).run_config_schema.config_type; "
                    "ops = schema.fields['ops'].config_type.fields['plan_supabase_backup'].config_type; "
                    "print(ops.fields['config'].config_type.fields['target_database'].default_value)")
    environment = {**os.environ, "WEHUB_BACKUP_TARGET_DB": "wehub", "SUPABASE_DB_HOST": "db.example.supabase.co"}
    shown = subprocess.run([sys.executable, "-c", show_default], capture_output=True, text=True, timeout=120,
                           env=environment)
    assert shown.stdout.strip() == "wehub", shown.stderr


def test_daily_incremental_schedule_runs_the_other_six_days_and_can_be_left_stopped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_DB_HOST", "db.example.supabase.co")
    defs = build_definitions()
    daily = defs.resolve_schedule_def("daily_incremental_backup_schedule")
    assert daily.default_status == dg.DefaultScheduleStatus.RUNNING and daily.job_name == BACKUP_JOB
    request = run_request(daily)
    config = request.run_config["ops"]["plan_supabase_backup"]["config"]
    assert config == {"target_database": "wehub_backup_test", "mode": "incremental"}
    assert dg.validate_run_config(defs.get_job_def(BACKUP_JOB), request.run_config)
    # With the weekly full copy, one run a day at 02:00, never two on the same day.
    weekly = defs.resolve_schedule_def("weekly_backup_schedule")
    monday = datetime(2025, 6, 2, 0, 0, tzinfo=UTC)
    both = sorted(ticks(daily, monday, 12) + ticks(weekly, monday, 2))[:14]
    assert [moment.date() for moment in both] == [(monday + timedelta(days=day)).date() for day in range(14)]
    assert {moment.hour for moment in both} == {2}
    assert [moment.weekday() for moment in ticks(weekly, monday, 2)] == [6, 6]

    off = build_daily_incremental_schedule({"WEHUB_BACKUP_DAILY_INCREMENTAL": "off"})
    assert off.default_status == dg.DefaultScheduleStatus.STOPPED
    with pytest.raises(SettingsError, match="WEHUB_BACKUP_DAILY_INCREMENTAL"):
        build_daily_incremental_schedule({"WEHUB_BACKUP_DAILY_INCREMENTAL": "sometimes"})
