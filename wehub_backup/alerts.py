"""Failure and freshness alerts: classify what went wrong, word it, and deliver it.

An operator reading an alert at night needs one line that says what broke (wrong password,
unreachable host, pg_dump too old, a table that did not verify...) and a link to the run.
Everything here is plain Python so it can be tested without a Dagster run; only
``AlertSettings`` is a Dagster resource, so the UI shows which channels are configured.
Delivery never raises: an alert that cannot be sent must not crash the sensor that sends it.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import smtplib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

import dagster as dg

from wehub_backup.settings import env_or_default

_LOG = logging.getLogger(__name__)

DEFAULT_DAGSTER_URL = "http://localhost:3000"
DEFAULT_MAX_BACKUP_AGE = timedelta(days=8)
SUMMARY_MAX_CHARS = 200
WEBHOOK_TIMEOUT_S = 5.0
SMTP_TIMEOUT_S = 10.0


class FailureCategory(enum.StrEnum):
    """What kind of failure an error text shows; decides what the operator checks first."""

    AUTHENTICATION = "authentication"
    NETWORK = "network"
    VERSION_MISMATCH = "version mismatch"
    PERMISSION_DENIED = "permission denied"
    MISSING_OBJECT = "missing object"
    VERIFICATION_MISMATCH = "verification mismatch"
    DISK_FULL = "disk full"
    TARGET_IN_USE = "target in use"
    EGRESS_BUDGET = "egress budget"
    CONCURRENT_RUN = "concurrent run"
    CONFIG = "config"
    STATEMENT_TIMEOUT = "statement timeout"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class FailureCause:
    """The classified cause of a failure: a category and one password-free line."""

    category: FailureCategory
    summary: str


# --- secrets -------------------------------------------------------------------------------

_PASSWORD_ASSIGNMENT = re.compile(
    r"""(?ix)
    \b([a-z_]*(?:password|passwd|pwd))   # password=, PGPASSWORD=, smtp_password:, "password":
    (["']?\s*[=:]\s*)
    ('[^']*'|"[^"]*"|[^\s,;&'"}]+)
    """
)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@")


def scrub_secrets(text: str) -> str:
    """Mask passwords in connection strings, environment assignments and URLs.

    Error texts can echo a conninfo string or a URL with credentials; an alert travels to chat
    and mail boxes, so the value is replaced before anything leaves this module.
    """
    text = _URL_CREDENTIALS.sub(r"\1:***@", text)
    return _PASSWORD_ASSIGNMENT.sub(r"\1\2***", text)


def one_line(text: str, limit: int = SUMMARY_MAX_CHARS) -> str:
    """Collapse whitespace and cut to ``limit`` characters so a summary fits a chat line."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 3].rstrip() + "..."


# --- classification ------------------------------------------------------------------------

# ``wehub_backup.preflight.PreflightError:`` before a message: the class is not the operator's business.
EXCEPTION_CLASS_PREFIX = r"(?:[a-z_]\w*\.)+[A-Z]\w*:"
_LINE_PREFIXES = re.compile(
    r"^(?:" + EXCEPTION_CLASS_PREFIX + r"\s*"  # psycopg.OperationalError:
    r"|(?:connection failed|could not execute query|query failed):\s*"
    r"|(?:pg_dump|pg_restore|psql|pg_dumpall|createdb|dropdb)(?::[^:\s]+:\d+)?:\s*"
    r"|(?:error|warning|detail|fatal|ERROR|FATAL|WARNING):\s*)*"
)
_NOISE_LINE = re.compile(
    r"^(?:Traceback|File \"|Stack Trace:|The above exception|During handling|\^|~+|"
    r"LINE \d+:|HINT:|CONTEXT:|DETAIL:|\w+: detail:)"
)
_ERRORISH_LINE = re.compile(r"(?i)error|fatal|failed|denied|exception|could not|cannot")


def _clean_line(line: str) -> str:
    """Drop the exception, program and severity prefixes that repeat on every error line."""
    return _LINE_PREFIXES.sub("", line.strip())


def _line_at(text: str, match: re.Match[str]) -> str:
    """The whole line of ``text`` where ``match`` starts."""
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start : end if end != -1 else len(text)]


def _meaningful_lines(text: str) -> list[str]:
    """Lines that carry a message, without traceback frames, carets and hints."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not _NOISE_LINE.match(line)]


def _last_error_line(text: str) -> str:
    """The last line that reads like an error, else the last line with any message."""
    lines = _meaningful_lines(text)
    errorish = [line for line in lines if _ERRORISH_LINE.search(line)]
    if errorish:
        return errorish[-1]
    return lines[-1] if lines else "no error text was recorded"


def _matched_line(text: str, match: re.Match[str]) -> str:
    """The default summary: the line that matched, without its prefixes."""
    return _clean_line(_line_at(text, match))


def _permission_summary(text: str, match: re.Match[str]) -> str:
    """``permission denied on table storage.migrations``: names the object, schema-qualified
    when pg_dump's ``Query was: LOCK TABLE ...`` detail tells which schema it was."""
    kind, name = match.group("kind"), match.group("name").strip('"')
    locked = re.search(rf"LOCK TABLE (\S+\.\"?{re.escape(name)}\"?) IN", text)
    if kind == "table" and locked:
        name = locked.group(1).replace('"', "")
    return f"permission denied on {kind} {name}"


def _missing_summary(text: str, match: re.Match[str]) -> str:
    """``missing role supabase_admin``: the kind and name of the object that is not there."""
    return f"missing {match.group('kind')} {match.group('name')}"


def _verification_summary(text: str, match: re.Match[str]) -> str:
    """``verification mismatch on table public.orders: row count 10 != 9``."""
    if match.group("table"):
        return f"verification mismatch on table {match.group('table')}: {match.group('detail')}"
    return f"verification failed: {match.group('detail')}"


def _version_summary(text: str, match: re.Match[str]) -> str:
    """Adds pg_dump's ``server version: 17.4; pg_dump version: 15.18`` detail when present."""
    versions = re.search(r"server version: \S+; \w+ version: [^\n]+", text)
    detail = f" ({versions.group(0).strip()})" if versions else ""
    return f"{_matched_line(text, match)}{detail}"


@dataclass(frozen=True)
class _Rule:
    category: FailureCategory
    pattern: re.Pattern[str]
    summarize: Callable[[str, re.Match[str]], str]


def _rule(
    category: FailureCategory,
    pattern: str,
    summarize: Callable[[str, re.Match[str]], str] | None = None,
) -> _Rule:
    """A rule whose summary defaults to the line that matched."""
    return _Rule(category, re.compile(pattern), summarize or _matched_line)


# Order matters: the first rule that matches anywhere in the text wins. The project's own
# refusals and verification come first (they are precise), then root causes that make later
# statements fail (a too-old pg_dump, a full disk, a wrong password) before their symptoms.
_RULES: tuple[_Rule, ...] = (
    _rule(FailureCategory.CONCURRENT_RUN, r"(?i)another (?:backup|migration|run)\b.*\brunning"),
    _rule(FailureCategory.EGRESS_BUDGET, r"(?i)egress budget"),
    _rule(FailureCategory.CONFIG, r"(?i)invalid target database|is Supabase's transaction pooler"),
    _rule(
        FailureCategory.VERIFICATION_MISMATCH,
        r"(?i)verification failed:\s*(?:table (?P<table>[^\s:]+):\s*)?(?P<detail>[^\n]*)",
        _verification_summary,
    ),
    _rule(
        FailureCategory.VERSION_MISMATCH,
        r"server version mismatch|unsupported version \([\d.]+\) in file header"
        r"|(?i:no suitable (?:pg_dump|pg_restore|psql))|no pg_dump\S* found"
        r'|unrecognized configuration parameter "transaction_timeout"|invalid command \\restrict',
        _version_summary,
    ),
    _rule(
        FailureCategory.DISK_FULL,
        r"No space left on device|could not extend file|Disk quota exceeded|not enough free space",
    ),
    _rule(FailureCategory.AUTHENTICATION, r"(?i)password file\b[^\n]*"),
    _rule(
        FailureCategory.AUTHENTICATION,
        r"password authentication failed|no password supplied|SASL authentication failed"
        r"|no pg_hba\.conf entry|(?i:authentication failed)",
    ),
    _rule(FailureCategory.TARGET_IN_USE, r"is being accessed by other users|still has \d+ connected session"),
    _rule(
        FailureCategory.PERMISSION_DENIED,
        r"permission denied for (?P<kind>table|relation|schema|sequence|function|database|view"
        r"|materialized view|type|language|large object|tablespace|foreign table) (?P<name>\S+)",
        _permission_summary,
    ),
    _rule(
        FailureCategory.PERMISSION_DENIED,
        r"(?i)permission denied|must be owner of|must be a member of role|must be a superuser",
    ),
    _rule(
        FailureCategory.MISSING_OBJECT,
        r'(?P<kind>role|schema|database|extension|function|relation) "?(?P<name>[^"\s]+)"?'
        r" (?:does not exist|is not available)",
        _missing_summary,
    ),
    _rule(FailureCategory.STATEMENT_TIMEOUT, r"canceling statement due to statement timeout"),
    _rule(
        FailureCategory.NETWORK,
        r"(?i)could not connect|connection refused|timeout expired|timed out"
        r"|could not translate host name|server closed the connection unexpectedly"
        r"|connection to server was lost|network is unreachable|no route to host"
        r"|max clients reached|terminating connection due to administrator command"
        r"|SSL (?:error|SYSCALL)|SSL was required|SSL negotiation|certificate verify failed"
        r"|root certificate file|SSL connection has been closed",
    ),
)


def classify_failure(text: str) -> FailureCause:
    """Classify error text from psycopg, pg_dump, pg_restore, psql or the OS.

    Returns a category and a single password-free line (at most ``SUMMARY_MAX_CHARS``) that an
    operator can act on without opening the run: the offending object, table or host included.
    """
    for rule in _RULES:
        match = rule.pattern.search(text)
        if match:
            return FailureCause(rule.category, one_line(scrub_secrets(rule.summarize(text, match))))
    summary = _clean_line(_last_error_line(text))
    return FailureCause(FailureCategory.UNKNOWN, one_line(scrub_secrets(summary)))


# --- messages ------------------------------------------------------------------------------


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
class StaleBackupAlert(Alert):
    """No successful backup for longer than the schedule allows: a missed schedule, a stopped
    daemon or a run that keeps failing."""

    job_name: str
    last_success: datetime | None
    watching_since: datetime
    now: datetime
    max_age: timedelta
    link: str

    @property
    def title(self) -> str:
        return f"wehub_backup: no successful {self.job_name} for more than {_human_age(self.max_age)}"

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
) -> StaleBackupAlert:
    """The "no successful backup since ..." alert, linking to the job's runs in the UI."""
    base = (dagster_url or DEFAULT_DAGSTER_URL).rstrip("/")
    query = urllib.parse.urlencode({"q[]": f"job:{job_name}"})
    return StaleBackupAlert(job_name, last_success, watching_since, now, max_age, f"{base}/runs?{query}")


# --- settings ------------------------------------------------------------------------------


class AlertSettings(dg.ConfigurableResource):
    """Where alerts go: a Slack-compatible webhook, SMTP e-mail, both, or neither (log only)."""

    webhook_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = True
    email_from: str | None = None
    email_to: str | None = None
    dagster_url: str = DEFAULT_DAGSTER_URL

    @property
    def email_recipients(self) -> list[str]:
        """``email_to`` is comma-separated so one variable can name several people."""
        return [address.strip() for address in (self.email_to or "").split(",") if address.strip()]

    @property
    def email_enabled(self) -> bool:
        return bool(self.smtp_host and self.email_recipients)


_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def parse_flag(name: str, value: str) -> bool:
    """Read an on/off environment value; a typo is an error, not a silent ``False``."""
    word = value.strip().lower()
    if word in _TRUE_WORDS | _FALSE_WORDS:
        return word in _TRUE_WORDS
    raise ValueError(f"{name} must be one of {sorted(_TRUE_WORDS | _FALSE_WORDS)}, got {value!r}")


def alert_settings_from_env() -> AlertSettings:
    """``AlertSettings`` bound to the ``WEHUB_ALERT_*`` variables that are set.

    Strings and the port are ``dg.EnvVar``s, so the UI shows variable names instead of the
    webhook URL or password, and values are read when the sensor runs. Dagster has no boolean
    ``EnvVar``, so STARTTLS is read here; it is not a secret.
    """
    starttls = os.environ.get("WEHUB_ALERT_SMTP_STARTTLS")
    return AlertSettings(
        webhook_url=env_or_default("WEHUB_ALERT_WEBHOOK_URL", None),
        smtp_host=env_or_default("WEHUB_ALERT_SMTP_HOST", None),
        smtp_port=env_or_default("WEHUB_ALERT_SMTP_PORT", 587),
        smtp_user=env_or_default("WEHUB_ALERT_SMTP_USER", None),
        smtp_password=env_or_default("WEHUB_ALERT_SMTP_PASSWORD", None),
        smtp_starttls=parse_flag("WEHUB_ALERT_SMTP_STARTTLS", starttls) if starttls else True,
        email_from=env_or_default("WEHUB_ALERT_EMAIL_FROM", None),
        email_to=env_or_default("WEHUB_ALERT_EMAIL_TO", None),
        dagster_url=env_or_default("WEHUB_DAGSTER_URL", DEFAULT_DAGSTER_URL),
    )


# --- delivery ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryResult:
    """Outcome of sending one alert over one channel."""

    channel: str
    delivered: bool
    attempts: int
    error: str | None = None


def none_delivered(results: list[DeliveryResult]) -> bool:
    """True when channels are configured and none of them took the alert (a sensor retries)."""
    return bool(results) and not any(result.delivered for result in results)


class _PermanentDeliveryError(Exception):
    """A refusal that retrying cannot fix (a 4xx other than 429)."""


def _retrying(
    channel: str, send: Callable[[], None], attempts: int, backoff_s: float, log: logging.Logger
) -> DeliveryResult:
    """Call ``send`` up to ``attempts`` times with doubling waits; log each failure, never raise."""
    error = "no attempt was made"
    for attempt in range(1, attempts + 1):
        try:
            send()
        except _PermanentDeliveryError as exc:
            error = scrub_secrets(str(exc))
            log.warning("Alert delivery via %s refused, not retrying: %s", channel, error)
            return DeliveryResult(channel, False, attempt, error)
        except Exception as exc:  # any failure to send is reported, never propagated
            error = scrub_secrets(f"{type(exc).__name__}: {exc}")
            log.warning("Alert delivery via %s failed (attempt %d/%d): %s", channel, attempt, attempts, error)
            if attempt < attempts:
                time.sleep(backoff_s * 2 ** (attempt - 1))
        else:
            return DeliveryResult(channel, True, attempt)
    return DeliveryResult(channel, False, attempts, error)


def _url_origin(url: str) -> str:
    """Scheme and host only: a Slack webhook URL's path is itself a secret."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}"


def send_webhook(
    url: str,
    payload: Mapping[str, object],
    attempts: int = 3,
    backoff_s: float = 1.0,
    log: logging.Logger = _LOG,
) -> DeliveryResult:
    """POST ``payload`` as JSON to a Slack-compatible incoming webhook, retrying server errors."""
    body = json.dumps(payload).encode()

    def post() -> None:
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code != 429:
                raise _PermanentDeliveryError(f"HTTP {exc.code} {exc.reason}") from None
            raise

    return _retrying(f"webhook {_url_origin(url)}", post, attempts, backoff_s, log)


def send_email(
    settings: AlertSettings,
    message: Alert,
    attempts: int = 3,
    backoff_s: float = 1.0,
    log: logging.Logger = _LOG,
) -> DeliveryResult:
    """Send the alert over SMTP: STARTTLS before any login when enabled, login when a user is set."""
    recipients = settings.email_recipients
    sender = settings.email_from or f"wehub-backup@{settings.smtp_host}"
    email = message.as_email(sender, recipients)

    def submit() -> None:
        with smtplib.SMTP(settings.smtp_host or "", settings.smtp_port, timeout=SMTP_TIMEOUT_S) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            smtp.send_message(email, from_addr=sender, to_addrs=recipients)

    return _retrying(f"e-mail {settings.smtp_host}:{settings.smtp_port}", submit, attempts, backoff_s, log)


def deliver_alert(
    message: Alert,
    settings: AlertSettings,
    log: logging.Logger = _LOG,
    backoff_s: float = 1.0,
) -> list[DeliveryResult]:
    """Log the alert, then send it to every configured channel; an empty list means log only."""
    log.warning("ALERT %s\n%s", message.title, message.text)
    results = []
    if settings.webhook_url:
        results.append(send_webhook(settings.webhook_url, message.as_slack_payload(), backoff_s=backoff_s, log=log))
    if settings.email_enabled:
        results.append(send_email(settings, message, backoff_s=backoff_s, log=log))
    return results
