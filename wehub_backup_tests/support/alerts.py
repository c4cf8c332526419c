"""A failed run's alert as the tests build it."""

from __future__ import annotations

from wehub_backup.alerts.classify import classify_failure
from wehub_backup.alerts.messages import AlertMessage, run_url


def failed_run_alert(base_url: str = "http://dagster.example:3000/") -> AlertMessage:
    """A backup run that failed in its dump for a role the VPS lacks."""
    return AlertMessage(
        job_name="backup_supabase_to_vps",
        run_id="3f2a9c1e-0000-4000-8000-000000000001",
        failed_step="dump_supabase",
        target="wehub_backup_test",
        cause=classify_failure('ERROR:  role "supabase_admin" does not exist'),
        run_url=run_url(base_url, "3f2a9c1e-0000-4000-8000-000000000001"),
    )
