"""Delivering an alert: a Slack-compatible webhook, SMTP e-mail, both, or neither (log only).

Delivery never raises: an alert that cannot be sent must not crash the sensor that sends it.
"""

from __future__ import annotations

import json
import logging
import smtplib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from wehub_backup.alerts.classify import scrub_secrets
from wehub_backup.alerts.messages import Alert
from wehub_backup.config import DEFAULT_DAGSTER_URL

_LOG = logging.getLogger(__name__)
WEBHOOK_TIMEOUT_S = 5.0
SMTP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SmtpServer:
    """An SMTP server that takes the alerts, and whom they go to."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    starttls: bool = True


@dataclass(frozen=True)
class AlertChannels:
    """Where alerts go: a Slack-compatible webhook, an SMTP server, both, or neither (log only)."""

    webhook_url: str | None = None
    smtp: SmtpServer | None = None
    dagster_url: str = DEFAULT_DAGSTER_URL


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
    smtp: SmtpServer,
    message: Alert,
    attempts: int = 3,
    backoff_s: float = 1.0,
    log: logging.Logger = _LOG,
) -> DeliveryResult:
    """Send the alert over SMTP: STARTTLS before any login when enabled, login when a user is set."""
    email = message.as_email(smtp.sender, smtp.recipients)

    def submit() -> None:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=SMTP_TIMEOUT_S) as session:
            if smtp.starttls:
                session.starttls()
            if smtp.user:
                session.login(smtp.user, smtp.password or "")
            session.send_message(email, from_addr=smtp.sender, to_addrs=list(smtp.recipients))

    return _retrying(f"e-mail {smtp.host}:{smtp.port}", submit, attempts, backoff_s, log)


def deliver_alert(
    message: Alert,
    settings: AlertChannels,
    log: logging.Logger = _LOG,
    backoff_s: float = 1.0,
) -> list[DeliveryResult]:
    """Log the alert, then send it to every configured channel; an empty list means log only."""
    log.warning("ALERT %s\n%s", message.title, message.text)
    results = []
    if settings.webhook_url:
        results.append(send_webhook(settings.webhook_url, message.as_slack_payload(), backoff_s=backoff_s, log=log))
    if settings.smtp:
        results.append(send_email(settings.smtp, message, backoff_s=backoff_s, log=log))
    return results
