"""The alerts' words: a failed run, an overdue backup, as chat and mail show them (no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from wehub_backup.alerts.classify import FailureCause
from wehub_backup.alerts.messages import AlertMessage, backup_is_stale, run_url, stale_backup_alert
from wehub_backup.defs.resources import AlertSettings
from wehub_backup.errors import FailureCategory
from wehub_backup_tests.support.alerts import failed_run_alert

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def test_run_url_joins_base_and_run_id_with_or_without_trailing_slash() -> None:
    assert run_url("http://host:3000/", "abc") == "http://host:3000/runs/abc"
    assert run_url("http://host:3000", "abc") == "http://host:3000/runs/abc"
    assert run_url(None, "abc") == "http://localhost:3000/runs/abc"


def test_alert_text_names_job_step_target_cause_and_link() -> None:
    message = failed_run_alert()
    assert message.title == "wehub_backup: backup_supabase_to_vps failed (missing object)"
    assert message.text.splitlines() == [
        "Job: backup_supabase_to_vps",
        "Failed step: dump_supabase",
        "Target: wehub_backup_test",
        "Cause (missing object): missing role supabase_admin",
        "Run: http://dagster.example:3000/runs/3f2a9c1e-0000-4000-8000-000000000001",
    ]


def test_slack_payload_escapes_slack_markup() -> None:
    message = AlertMessage("job", "r1", None, None, FailureCause(FailureCategory.UNKNOWN, "a <b> & c"), "u")
    assert "a &lt;b&gt; &amp; c" in message.as_slack_payload()["text"]
    assert "Failed step: none" in message.text


def test_email_channel_needs_host_and_recipients() -> None:
    assert AlertSettings(smtp_host="mail").channels().smtp is None
    assert AlertSettings(email_to="ops@x").channels().smtp is None
    assert AlertSettings(smtp_host="mail", email_to=" ops@x ,").channels().smtp.recipients == ("ops@x",)


@pytest.mark.parametrize(
    ("last_success", "stale"),
    [(None, True), (NOW - timedelta(days=7), False), (NOW - timedelta(days=8), False), (NOW - timedelta(days=9), True)],
)
def test_backup_is_stale_after_eight_days(last_success: datetime | None, stale: bool) -> None:
    assert backup_is_stale(last_success, NOW) is stale


def test_stale_backup_alert_says_since_when_and_links_the_runs() -> None:
    alert = stale_backup_alert(
        "backup_supabase_to_vps",
        last_success=NOW - timedelta(days=9, hours=3),
        watching_since=NOW - timedelta(days=30),
        now=NOW,
        max_age=timedelta(days=8),
        dagster_url="https://dagster.wehub.example/",
    )
    assert alert.title == "wehub_backup: no successful backup_supabase_to_vps for more than 8 days"
    assert "Last successful run finished at 2025-03-01 09:00 UTC (9 days 3 hours ago)" in alert.text
    assert "https://dagster.wehub.example/runs?q%5B%5D=job%3Abackup_supabase_to_vps" in alert.text


def test_stale_backup_alert_without_any_success_counts_from_monitoring_start() -> None:
    alert = stale_backup_alert(
        "backup_supabase_to_vps", None, NOW - timedelta(days=8, hours=1), NOW, timedelta(hours=192), None
    )
    assert "No successful run recorded since monitoring started at 2025-03-02 11:00 UTC" in alert.text
