"""Alert classification, wording and delivery, against real HTTP and SMTP servers on loopback."""

from __future__ import annotations

import logging

import dagster as dg
import pytest

from wehub_backup.alerts.delivery import AlertChannels, deliver_alert, send_email, send_webhook
from wehub_backup.defs.resources import AlertSettings, alert_settings_from_env
from wehub_backup.errors import SettingsError
from wehub_backup_tests.harness.cluster import free_tcp_port
from wehub_backup_tests.support.alerts import failed_run_alert
from wehub_backup_tests.support.loopback_servers import (
    LOOPBACK,
    running_smtp_sink,
    running_webhook_receiver,
)

FAST_RETRY_S = 0.01


def test_webhook_delivers_the_alert_as_json() -> None:
    message = failed_run_alert()
    with running_webhook_receiver() as receiver:
        result = send_webhook(receiver.url, message.as_slack_payload(), backoff_s=FAST_RETRY_S)
    assert result.delivered and result.attempts == 1
    assert receiver.payloads == [{"text": f"{message.title}\n{message.text}"}]


def test_webhook_retries_server_errors_until_delivered(caplog: pytest.LogCaptureFixture) -> None:
    with running_webhook_receiver(fail_first=2) as receiver:
        result = send_webhook(receiver.url, {"text": "hello"}, attempts=3, backoff_s=FAST_RETRY_S)
    assert result.delivered and result.attempts == 3
    assert receiver.requests == 3
    assert receiver.payloads == [{"text": "hello"}]
    failures = [r for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert len(failures) == 2
    assert "HTTP Error 500" in failures[0].getMessage()
    assert "secret-token" not in caplog.text


def test_webhook_does_not_retry_a_client_error() -> None:
    with running_webhook_receiver(fail_first=5, fail_status=404) as receiver:
        result = send_webhook(receiver.url, {"text": "hello"}, attempts=3, backoff_s=FAST_RETRY_S)
    assert not result.delivered
    assert (result.attempts, receiver.requests) == (1, 1)
    assert "HTTP 404" in (result.error or "")


def test_webhook_that_is_down_is_logged_and_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://{LOOPBACK}:{free_tcp_port()}/hooks/secret-token"
    result = send_webhook(url, {"text": "hello"}, attempts=3, backoff_s=FAST_RETRY_S)
    assert not result.delivered and result.attempts == 3
    assert "Connection refused" in (result.error or "")
    assert sum("failed (attempt" in r.getMessage() for r in caplog.records) == 3
    assert "secret-token" not in caplog.text


def _smtp_settings(port: int, **overrides: object) -> AlertChannels:
    """Alert channels as the resource resolves them, e-mail to a loopback SMTP server."""
    values: dict[str, object] = {
        "smtp_host": LOOPBACK,
        "smtp_port": port,
        "smtp_starttls": False,
        "email_from": "backups@wehub.example",
        "email_to": "ops@wehub.example, oncall@wehub.example",
    }
    return AlertSettings(**(values | overrides)).channels()


def test_email_reaches_every_recipient_with_subject_and_body() -> None:
    message = failed_run_alert()
    with running_smtp_sink() as sink:
        settings = _smtp_settings(sink.port, smtp_user="alerts", smtp_password="mail-secret")
        result = send_email(settings.smtp, message, backoff_s=FAST_RETRY_S)
    assert result.delivered
    [mail] = sink.mails
    assert mail.envelope_from == "backups@wehub.example"
    assert mail.envelope_to == ["ops@wehub.example", "oncall@wehub.example"]
    assert mail.login == ("alerts", "mail-secret")
    assert mail.message["Subject"] == message.title
    assert mail.message["To"] == "ops@wehub.example, oncall@wehub.example"
    body = mail.message.get_content()
    assert "Cause (missing object): missing role supabase_admin" in body
    assert message.run_url in body


def test_email_requiring_starttls_never_logs_in_on_a_plain_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running_smtp_sink() as sink:
        settings = _smtp_settings(
            sink.port, smtp_starttls=True, smtp_user="alerts", smtp_password="mail-secret"
        )
        result = send_email(settings.smtp, failed_run_alert(), attempts=2, backoff_s=FAST_RETRY_S)
    assert not result.delivered and result.attempts == 2
    assert "STARTTLS" in (result.error or "")
    assert "AUTH" not in sink.commands and sink.mails == []
    assert "mail-secret" not in caplog.text


def test_email_server_down_is_reported_not_raised() -> None:
    settings = _smtp_settings(free_tcp_port())
    result = send_email(settings.smtp, failed_run_alert(), attempts=2, backoff_s=FAST_RETRY_S)
    assert not result.delivered and result.attempts == 2
    assert "Connection refused" in (result.error or "")


def test_deliver_alert_sends_to_both_channels() -> None:
    message = failed_run_alert()
    with running_webhook_receiver() as receiver, running_smtp_sink() as sink:
        settings = _smtp_settings(sink.port, webhook_url=receiver.url)
        results = deliver_alert(message, settings, backoff_s=FAST_RETRY_S)
    assert [r.delivered for r in results] == [True, True]
    assert len(receiver.payloads) == 1 and len(sink.mails) == 1


def test_deliver_alert_without_channels_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        results = deliver_alert(failed_run_alert(), AlertChannels())
    assert results == []
    assert "backup_supabase_to_vps failed (missing object)" in caplog.text
    assert "missing role supabase_admin" in caplog.text


ALERT_VARIABLES = (
    "WEHUB_ALERT_WEBHOOK_URL",
    "WEHUB_ALERT_SMTP_HOST",
    "WEHUB_ALERT_SMTP_PORT",
    "WEHUB_ALERT_SMTP_USER",
    "WEHUB_ALERT_SMTP_PASSWORD",
    "WEHUB_ALERT_SMTP_STARTTLS",
    "WEHUB_ALERT_EMAIL_FROM",
    "WEHUB_ALERT_EMAIL_TO",
    "WEHUB_DAGSTER_URL",
)


@pytest.fixture
def clean_alert_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ALERT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_from_env_defer_to_environment_variables(clean_alert_env: pytest.MonkeyPatch) -> None:
    environ = {
        "WEHUB_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook",
        "WEHUB_ALERT_SMTP_HOST": "mail.wehub.example",
        "WEHUB_ALERT_SMTP_PORT": "2525",
        "WEHUB_ALERT_SMTP_PASSWORD": "mail-secret",
        "WEHUB_ALERT_SMTP_STARTTLS": "no",
        "WEHUB_ALERT_EMAIL_TO": "ops@wehub.example",
        "WEHUB_DAGSTER_URL": "https://dagster.wehub.example",
    }
    for name, value in environ.items():
        clean_alert_env.setenv(name, value)
    settings = alert_settings_from_env()
    assert isinstance(settings.smtp_password, dg.EnvVar)
    assert settings.smtp_password.env_var_name == "WEHUB_ALERT_SMTP_PASSWORD"
    resolved = settings.process_config_and_initialize()
    assert (resolved.smtp_host, resolved.smtp_port, resolved.smtp_starttls) == ("mail.wehub.example", 2525, False)
    assert resolved.smtp_password == "mail-secret"
    assert resolved.smtp_user is None
    assert resolved.dagster_url == "https://dagster.wehub.example"
    assert resolved.channels().smtp is not None


def test_settings_from_empty_environment_use_defaults(clean_alert_env: pytest.MonkeyPatch) -> None:
    resolved = alert_settings_from_env().process_config_and_initialize()
    assert resolved.webhook_url is None and resolved.channels().smtp is None
    assert (resolved.smtp_port, resolved.smtp_starttls) == (587, True)
    assert resolved.dagster_url == "http://localhost:3000"


def test_settings_refuse_an_unreadable_starttls_flag(clean_alert_env: pytest.MonkeyPatch) -> None:
    clean_alert_env.setenv("WEHUB_ALERT_SMTP_STARTTLS", "sometimes")
    with pytest.raises(SettingsError, match="WEHUB_ALERT_SMTP_STARTTLS"):
        alert_settings_from_env()



