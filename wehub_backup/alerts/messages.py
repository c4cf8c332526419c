"""The alerts' words: a failed run, an overdue backup."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

from wehub_backup.alerts.classify import FailureCause
from wehub_backup.config import DEFAULT_DAGSTER_URL, DEFAULT_MAX_BACKUP_AGE


def run_url(base_url: str | None, run_id: str) -> str:
    """Link to a run in the Dagster UI; the base is ``WEHUB_DAGSTER_URL``."""
    return f"{(base_url or DEFAULT_DAGSTER_URL).rstrip('/')}/runs/{run_id}"


def _slack_escape(text: str) -> str:
    """Slack reads ``<``, ``>`` and ``&`` as markup; error texts may contain them literally."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Alert:
    """Common rendering of every alert: a title and a plain-text body, for chat and mail."""

    @property
    def title(self) -> str:
        raise NotImplementedError

    @property
    def text(self) -> str:
        raise NotImplementedError

    def as_slack_payload(self) -> dict[str, str]:
        """Body of a Slack-compatible incoming-webhook POST."""
        return {"text": _slack_escape(f"{self.title}\n{self.text}")}

    def as_email(self, sender: str, recipients: Sequence[str]) -> EmailMessage:
        """The alert as an e-mail whose subject is the title."""
        email = EmailMessage()
        email["Subject"] = self.title
        email["From"] = sender
        email["To"] = ", ".join(recipients)
        email.set_content(self.text)
        return email


@dataclass(frozen=True)
class AlertMessage(Alert):
    """A failed run of a backup or migration job, worded for the operator."""

    job_name: str
    run_id: str
    failed_step: str | None
    target: str | None
    cause: FailureCause
    run_url: str

    @property
    def title(self) -> str:
        return f"wehub_backup: {self.job_name} failed ({self.cause.category})"

    @property
    def text(self) -> str:
        return "\n".join(
            (
                f"Job: {self.job_name}",
                f"Failed step: {self.failed_step or 'none (the run failed outside its steps)'}",
                f"Target: {self.target or 'unknown'}",
                f"Cause ({self.cause.category}): {self.cause.summary}",
                f"Run: {self.run_url}",
            )
        )


@dataclass(frozen=True)
class ArchiveAlert(Alert):
    """A verified backup whose archive (or its off-site copy) failed: the copy itself is good."""

    job_name: str
    run_id: str
    step: str
    target: str
    problem: str  # "was not archived", "not copied off-site"
    cause: FailureCause
    run_url: str

    @property
    def title(self) -> str:
        return f"wehub_backup: the verified copy in {self.target} {self.problem} ({self.cause.category})"

    @property
    def text(self) -> str:
        return "\n".join(
            (
                f"Job: {self.job_name} (the backup succeeded; its copy in {self.target} is verified)",
                f"Step: {self.step}",
                f"Cause ({self.cause.category}): {self.cause.summary}",
                f"Run: {self.run_url}",
            )
        )


@dataclass(frozen=True)
class StaleBackupAlert(Alert):
    """No successful backup for longer than the schedule allows: a missed schedule, a stopped
    daemon or a run that keeps failing."""

    job_name: str
    last_success: datetime | None
    watching_since: datetime
    now: datetime
    max_age: timedelta
    link: str
    target: str | None = None

    @property
    def title(self) -> str:
        into = f" into {self.target}" if self.target else ""
        return f"wehub_backup: no successful {self.job_name}{into} for more than {_human_age(self.max_age)}"

    @property
    def text(self) -> str:
        if self.last_success is None:
            since = f"No successful run recorded since monitoring started at {_stamp(self.watching_since)}"
        else:
            since = (
                f"Last successful run finished at {_stamp(self.last_success)}"
                f" ({_human_age(self.now - self.last_success)} ago)"
            )
        return "\n".join(
            (
                f"Job: {self.job_name}",
                f"{since}; a backup is expected at least every {_human_age(self.max_age)}.",
                "Check that the schedule is running, the dagster-daemon is up, and recent runs.",
                f"Runs: {self.link}",
            )
        )


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip()


def _human_age(age: timedelta) -> str:
    """``9 days 3 hours``: precise enough to judge how late a backup is."""
    hours = int(age.total_seconds() // 3600)
    days, hours = divmod(hours, 24)
    parts = [f"{days} day{'s' if days != 1 else ''}"] if days else []
    if hours or not parts:
        parts.append(f"{hours} hour{'s' if hours != 1 else ''}")
    return " ".join(parts)


def backup_is_stale(
    last_success: datetime | None, now: datetime, max_age: timedelta = DEFAULT_MAX_BACKUP_AGE
) -> bool:
    """True when the last good backup is older than ``max_age`` (or there is none)."""
    return last_success is None or now - last_success > max_age


def stale_backup_alert(
    job_name: str,
    last_success: datetime | None,
    watching_since: datetime,
    now: datetime,
    max_age: timedelta,
    dagster_url: str | None,
    target: str | None = None,
) -> StaleBackupAlert:
    """The "no successful backup since ..." alert, linking to the job's runs in the UI."""
    base = (dagster_url or DEFAULT_DAGSTER_URL).rstrip("/")
    query = urllib.parse.urlencode({"q[]": f"job:{job_name}"})
    return StaleBackupAlert(job_name, last_success, watching_since, now, max_age, f"{base}/runs?{query}", target)
