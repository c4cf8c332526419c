"""Alert classification, wording and delivery, against real HTTP and SMTP servers on loopback."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from wehub_backup.alerts import (
    AlertMessage,
    AlertSettings,
    FailureCategory,
    FailureCause,
    alert_settings_from_env,
    backup_is_stale,
    classify_failure,
    deliver_alert,
    run_url,
    send_email,
    send_webhook,
    stale_backup_alert,
)
from wehub_backup_tests.harness.cluster import free_tcp_port
from wehub_backup_tests.loopback_servers import (
    LOOPBACK,
    running_smtp_sink,
    running_webhook_receiver,
)

FAST_RETRY_S = 0.01

# Error texts as pg_dump 15, psql 15, pg_restore 15, psycopg 3 and the OS print them
# (captured from real programs against a PostgreSQL 15 server, or quoted from Supabase reports).
CLASSIFIED_ERRORS = [
    (
        'pg_dump: error: connection to server at "127.0.0.1", port 54991 failed: '
        'FATAL:  password authentication failed for user "postgres"',
        FailureCategory.AUTHENTICATION,
        'password authentication failed for user "postgres"',
    ),
    (
        'psycopg.OperationalError: connection failed: connection to server at "db.abcd.supabase.co", '
        'port 5432 failed: FATAL:  password authentication failed for user "postgres"',
        FailureCategory.AUTHENTICATION,
        "password authentication failed",
    ),
    (
        'WARNING: password file "/root/.pgpass" has group or world access; permissions should be '
        "u=rw (0600) or less\n"
        'pg_dump: error: connection to server at "127.0.0.1", port 54991 failed: '
        "fe_sendauth: no password supplied",
        FailureCategory.AUTHENTICATION,
        'password file "/root/.pgpass" has group or world access',
    ),
    (
        'pg_dump failed: connection to server at "127.0.0.1", port 54991 failed: '
        "fe_sendauth: no password supplied",
        FailureCategory.AUTHENTICATION,
        "no password supplied",
    ),
    (
        'pg_dump: error: connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?",
        FailureCategory.NETWORK,
        'connection to server at "127.0.0.1", port 1 failed: Connection refused',
    ),
    (
        'pg_dump: error: could not translate host name "db.abcd.supabase.co" to address: '
        "Name or service not known",
        FailureCategory.NETWORK,
        'could not translate host name "db.abcd.supabase.co"',
    ),
    (
        "FATAL:  terminating connection due to administrator command\n"
        "server closed the connection unexpectedly\n"
        "\tThis probably means the server terminated abnormally\n"
        "\tbefore or while processing the request.\n"
        "connection to server was lost",
        FailureCategory.NETWORK,
        "terminating connection due to administrator command",
    ),
    (
        'psql: error: connection to server at "127.0.0.1", port 54991 failed: '
        "server does not support SSL, but SSL was required",
        FailureCategory.NETWORK,
        "SSL was required",
    ),
    (
        'pg_dump: error: connection to server at "aws-0-eu-central-1.pooler.supabase.com", port 5432 '
        "failed: FATAL:  Max client connections reached\n"
        "max clients reached in session mode - max clients are limited to pool_size: 15",
        FailureCategory.NETWORK,
        "max clients are limited to pool_size: 15",
    ),
    (
        "pg_dump: error: aborting because of server version mismatch\n"
        "pg_dump: detail: server version: 17.4; pg_dump version: 15.18 (Debian 15.18-0+deb12u1)",
        FailureCategory.VERSION_MISMATCH,
        "server version: 17.4; pg_dump version: 15.18",
    ),
    (
        "pg_restore: error: unsupported version (1.16) in file header",
        FailureCategory.VERSION_MISMATCH,
        "unsupported version (1.16) in file header",
    ),
    (
        'psql:/tmp/dump.sql:12: ERROR:  unrecognized configuration parameter "transaction_timeout"',
        FailureCategory.VERSION_MISMATCH,
        '"transaction_timeout"',
    ),
    (
        "pg_dump: error: query failed: ERROR:  permission denied for table migrations\n"
        "pg_dump: detail: Query was: LOCK TABLE storage.migrations IN ACCESS SHARE MODE",
        FailureCategory.PERMISSION_DENIED,
        "permission denied on table storage.migrations",
    ),
    (
        "pg_dump failed: query failed: ERROR:  permission denied for table migrations",
        FailureCategory.PERMISSION_DENIED,
        "permission denied on table migrations",
    ),
    (
        "pg_restore: error: could not execute query: ERROR:  permission denied to create event trigger",
        FailureCategory.PERMISSION_DENIED,
        "permission denied to create event trigger",
    ),
    (
        'pg_restore: error: could not execute query: ERROR:  must be owner of extension uuid-ossp',
        FailureCategory.PERMISSION_DENIED,
        "must be owner of extension uuid-ossp",
    ),
    (
        "pg_restore: error: could not execute query: ERROR:  role \"supabase_admin\" does not exist\n"
        "Command was: ALTER SCHEMA auth OWNER TO supabase_admin;\n"
        "pg_restore: warning: errors ignored on restore: 205",
        FailureCategory.MISSING_OBJECT,
        "missing role supabase_admin",
    ),
    (
        'ERROR:  extension "pg_graphql" is not available\n'
        'DETAIL:  Could not open extension control file "/usr/share/postgresql/15/extension/'
        'pg_graphql.control": No such file or directory.\n'
        "HINT:  The extension must first be installed on the system where PostgreSQL is running.",
        FailureCategory.MISSING_OBJECT,
        "missing extension pg_graphql",
    ),
    (
        'psql:/tmp/dump.sql:40: ERROR:  schema "auth" does not exist',
        FailureCategory.MISSING_OBJECT,
        "missing schema auth",
    ),
    (
        "verification failed: table public.orders: row count 10 != 9",
        FailureCategory.VERIFICATION_MISMATCH,
        "verification mismatch on table public.orders: row count 10 != 9",
    ),
    (
        "pg_dump: error: could not close output file: No space left on device",
        FailureCategory.DISK_FULL,
        "No space left on device",
    ),
    (
        'ERROR:  could not extend file "base/16384/16385": No space left on device\n'
        "HINT:  Check free disk space.",
        FailureCategory.DISK_FULL,
        'could not extend file "base/16384/16385"',
    ),
    (
        'psycopg.errors.ObjectInUse: database "wehub_backup_test" is being accessed by other users\n'
        "DETAIL:  There is 1 other session using the database.",
        FailureCategory.TARGET_IN_USE,
        'database "wehub_backup_test" is being accessed by other users',
    ),
    (
        "psycopg.errors.QueryCanceled: canceling statement due to statement timeout",
        FailureCategory.STATEMENT_TIMEOUT,
        "canceling statement due to statement timeout",
    ),
    (
        "refused: this run would exceed the egress budget (4.6 GB used + 0.9 GB estimated > 5.0 GB)",
        FailureCategory.EGRESS_BUDGET,
        "4.6 GB used",
    ),
    (
        "another backup to wehub_backup_test is running (run 3f2a); this run is refused",
        FailureCategory.CONCURRENT_RUN,
        "another backup to wehub_backup_test is running",
    ),
    (
        "invalid target database 'wehub; drop': only letters, digits and _ are allowed",
        FailureCategory.CONFIG,
        "invalid target database",
    ),
    (
        "verification failed: table public.orders: row count 9 in the copy, 10 in the source (and 2 more)",
        FailureCategory.VERIFICATION_MISMATCH,
        "verification mismatch on table public.orders: row count 9 in the copy, 10 in the source",
    ),
    (
        "verification failed: policies: 0 in the copy, 12 in the source",
        FailureCategory.VERIFICATION_MISMATCH,
        "verification failed: policies: 0 in the copy, 12 in the source",
    ),
    (
        "not enough free space in /opt/supabase_backups: 12 MiB free, about 300 MiB needed for the dump",
        FailureCategory.DISK_FULL,
        "12 MiB free",
    ),
    (
        "database wehub still has 2 connected session(s) after 60s; the verified copy was not swapped in",
        FailureCategory.TARGET_IN_USE,
        "database wehub still has 2 connected session(s)",
    ),
    (
        "another backup or migration run for wehub_backup_test is running; this run changed nothing",
        FailureCategory.CONCURRENT_RUN,
        "another backup or migration run for wehub_backup_test is running",
    ),
    (
        "the Supabase server port 6543 is Supabase's transaction pooler, which breaks pg_dump",
        FailureCategory.CONFIG,
        "port 6543",
    ),
    (
        "VPS user backup must be a superuser on the VPS server: it recreates Supabase's roles",
        FailureCategory.PERMISSION_DENIED,
        "must be a superuser",
    ),
    (
        "password file /root/.pgpass has group or world access (mode 644); run: chmod 600 /root/.pgpass",
        FailureCategory.AUTHENTICATION,
        "chmod 600",
    ),
    (
        "no pg_dump/pg_restore/psql found (install postgresql-client, or set WEHUB_PG_BINDIRS)",
        FailureCategory.VERSION_MISMATCH,
        "install postgresql-client",
    ),
    (
        "server version mismatch: the server is PostgreSQL 17 but the newest pg_dump here is 15.18; "
        "to dump it install postgresql-client-17 or newer (or set WEHUB_PG_BINDIRS).",
        FailureCategory.VERSION_MISMATCH,
        "the server is PostgreSQL 17",
    ),
]


@pytest.mark.parametrize(("text", "category", "summary_part"), CLASSIFIED_ERRORS)
def test_classifies_real_error_texts(text: str, category: FailureCategory, summary_part: str) -> None:
    cause = classify_failure(text)
    assert cause.category == category
    assert summary_part in cause.summary
    assert "\n" not in cause.summary


def test_unknown_error_keeps_the_last_error_line_not_the_traceback() -> None:
    text = (
        'dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while executing op "dump":\n'
        "Stack Trace:\n"
        '  File "/app/ops.py", line 10, in dump\n'
        "    run_tool(argv, env)\n"
        "The above exception was caused by the following exception:\n"
        "KeyError: 'checksum'\n"
        '  File "/app/ops.py", line 12, in dump\n'
    )
    cause = classify_failure(text)
    assert cause == FailureCause(FailureCategory.UNKNOWN, "KeyError: 'checksum'")


def test_summary_is_one_line_of_bounded_length() -> None:
    text = "pg_restore: error: could not execute query: ERROR:  " + "syntax error at or near x " * 40
    summary = classify_failure(text).summary
    assert len(summary) <= 200
    assert summary.endswith("...")


@pytest.mark.parametrize(
    "text",
    [
        'psycopg.OperationalError: invalid connection option in "host=db.x password=hunter2 dbname=postgres"',
        "could not connect: host=db.x port=5432 password='hunter2' sslmode=require",
        "Command 'PGPASSWORD=hunter2 pg_dump -h db.x' returned non-zero exit status 1.",
        'could not connect to postgresql://postgres:hunter2@db.abcd.supabase.co:5432/postgres',
        'ValueError: bad settings {"smtp_password": "hunter2", "smtp_host": "mail"}',
        "WEHUB_ALERT_SMTP_PASSWORD=hunter2 is set but WEHUB_ALERT_SMTP_USER is not",
        "FATAL:  password authentication failed for user postgres (password=hunter2)",
    ],
)
def test_summaries_never_contain_a_password(text: str) -> None:
    summary = classify_failure(text).summary
    assert "hunter2" not in summary
    assert "***" in summary


def test_url_credentials_are_masked_but_host_is_kept() -> None:
    summary = classify_failure(
        "could not connect to postgresql://postgres:hunter2@db.abcd.supabase.co:5432/postgres"
    ).summary
    assert "postgres:***@db.abcd.supabase.co:5432" in summary


def _message(base_url: str = "http://dagster.example:3000/") -> AlertMessage:
    return AlertMessage(
        job_name="backup_supabase_to_vps",
        run_id="3f2a9c1e-0000-4000-8000-000000000001",
        failed_step="dump_supabase",
        target="wehub_backup_test",
        cause=classify_failure('ERROR:  role "supabase_admin" does not exist'),
        run_url=run_url(base_url, "3f2a9c1e-0000-4000-8000-000000000001"),
    )


def test_run_url_joins_base_and_run_id_with_or_without_trailing_slash() -> None:
    assert run_url("http://host:3000/", "abc") == "http://host:3000/runs/abc"
    assert run_url("http://host:3000", "abc") == "http://host:3000/runs/abc"
    assert run_url(None, "abc") == "http://localhost:3000/runs/abc"


def test_alert_text_names_job_step_target_cause_and_link() -> None:
    message = _message()
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


def test_webhook_delivers_the_alert_as_json() -> None:
    message = _message()
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


def _smtp_settings(port: int, **overrides: object) -> AlertSettings:
    values: dict[str, object] = {
        "smtp_host": LOOPBACK,
        "smtp_port": port,
        "smtp_starttls": False,
        "email_from": "backups@wehub.example",
        "email_to": "ops@wehub.example, oncall@wehub.example",
    }
    return AlertSettings(**(values | overrides))


def test_email_reaches_every_recipient_with_subject_and_body() -> None:
    message = _message()
    with running_smtp_sink() as sink:
        settings = _smtp_settings(sink.port, smtp_user="alerts", smtp_password="mail-secret")
        result = send_email(settings, message, backoff_s=FAST_RETRY_S)
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
        result = send_email(settings, _message(), attempts=2, backoff_s=FAST_RETRY_S)
    assert not result.delivered and result.attempts == 2
    assert "STARTTLS" in (result.error or "")
    assert "AUTH" not in sink.commands and sink.mails == []
    assert "mail-secret" not in caplog.text


def test_email_server_down_is_reported_not_raised() -> None:
    settings = _smtp_settings(free_tcp_port())
    result = send_email(settings, _message(), attempts=2, backoff_s=FAST_RETRY_S)
    assert not result.delivered and result.attempts == 2
    assert "Connection refused" in (result.error or "")


def test_deliver_alert_sends_to_both_channels() -> None:
    message = _message()
    with running_webhook_receiver() as receiver, running_smtp_sink() as sink:
        settings = _smtp_settings(sink.port, webhook_url=receiver.url)
        results = deliver_alert(message, settings, backoff_s=FAST_RETRY_S)
    assert [r.delivered for r in results] == [True, True]
    assert len(receiver.payloads) == 1 and len(sink.mails) == 1


def test_deliver_alert_without_channels_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        results = deliver_alert(_message(), AlertSettings())
    assert results == []
    assert "backup_supabase_to_vps failed (missing object)" in caplog.text
    assert "missing role supabase_admin" in caplog.text


def test_email_channel_needs_host_and_recipients() -> None:
    assert not AlertSettings(smtp_host="mail").email_enabled
    assert not AlertSettings(email_to="ops@x").email_enabled
    assert AlertSettings(smtp_host="mail", email_to=" ops@x ,").email_recipients == ["ops@x"]


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
    assert resolved.email_enabled


def test_settings_from_empty_environment_use_defaults(clean_alert_env: pytest.MonkeyPatch) -> None:
    resolved = alert_settings_from_env().process_config_and_initialize()
    assert resolved.webhook_url is None and not resolved.email_enabled
    assert (resolved.smtp_port, resolved.smtp_starttls) == (587, True)
    assert resolved.dagster_url == "http://localhost:3000"


def test_settings_refuse_an_unreadable_starttls_flag(clean_alert_env: pytest.MonkeyPatch) -> None:
    clean_alert_env.setenv("WEHUB_ALERT_SMTP_STARTTLS", "sometimes")
    with pytest.raises(ValueError, match="WEHUB_ALERT_SMTP_STARTTLS"):
        alert_settings_from_env()


NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


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
