"""Failure classes: the project's own errors by class, the tools' and servers' words by rule (no server)."""

from __future__ import annotations

import pytest

from wehub_backup.alerts.classify import FailureCause, classify_failure, scrub_secrets
from wehub_backup.errors import FailureCategory

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
        'psycopg.errors.ObjectInUse: database "wehub" is being used by prepared transactions\n'
        "DETAIL:  There is 1 prepared transaction using the database.",
        FailureCategory.TARGET_IN_USE,
        'database "wehub" is being used by prepared transactions',
    ),
    (
        "psycopg.errors.QueryCanceled: canceling statement due to statement timeout",
        FailureCategory.STATEMENT_TIMEOUT,
        "canceling statement due to statement timeout",
    ),
    (
        'pg_dump: error: could not obtain lock on relation "public.blobs"\n'
        "pg_dump: error: a worker process died unexpectedly",
        FailureCategory.LOCK_CONFLICT,
        'could not obtain lock on relation "public.blobs"',
    ),
    (
        "psycopg.errors.LockNotAvailable: canceling statement due to lock timeout",
        FailureCategory.LOCK_CONFLICT,
        "canceling statement due to lock timeout",
    ),
]


# The project's own errors, as Dagster records them (``module.Class: message``): classified by their class.
OWN_ERRORS = [
    (
        "MigrationRefused",
        "migration refused, nothing was changed: function public.f() is written in c, which only a superuser "
        "can create (and 2 more)",
        FailureCategory.REFUSED,
        "function public.f() is written in c",
    ),
    (
        "LockLost",
        "lost the run's lock on wehub: its VPS session ended (server closed the connection unexpectedly); "
        "another run may be working on wehub now, so this run stopped",
        FailureCategory.CONCURRENT_RUN,
        "lost the run's lock on wehub: its VPS session ended",
    ),
    ("RunInterrupted", "interrupted by SIGTERM", FailureCategory.INTERRUPTED, "interrupted by SIGTERM"),
    (
        "NotEnoughConnections",
        "the Supabase source has too few free connection slots: 3 (database postgres's connection limit 3, "
        "0 in use), and the run needs 4 there (pg_dump --jobs=2 opens 3, the run's snapshot session 1 more): "
        "lower parallel_jobs (Supabase's free session pooler allows 15 clients)",
        FailureCategory.CONFIG,
        "too few free connection slots: 3",
    ),
    (
        "SettingsError",
        "SUPABASE_DB_NAME holds a line feed (\\n) at character 9 of 'postgres\\n': set it without line breaks "
        "or control characters",
        FailureCategory.CONFIG,
        "SUPABASE_DB_NAME holds a line feed",
    ),
    (
        "VerificationFailed",
        "verification failed: table public.orders: row count 10 != 9",
        FailureCategory.VERIFICATION_MISMATCH,
        "verification failed: table public.orders: row count 10 != 9",
    ),
    (
        "EgressBudgetError",
        "refused: this run would exceed the egress budget (4.6 GB used + 0.9 GB estimated > 5.0 GB)",
        FailureCategory.EGRESS_BUDGET,
        "4.6 GB used",
    ),
    (
        "ConcurrentRun",
        "another backup to wehub_backup_test is running (run 3f2a); this run is refused",
        FailureCategory.CONCURRENT_RUN,
        "another backup to wehub_backup_test is running",
    ),
    (
        "InvalidTarget",
        "invalid target database 'wehub; drop': only letters, digits and _ are allowed",
        FailureCategory.CONFIG,
        "invalid target database",
    ),
    (
        "VerificationFailed",
        "verification failed: table public.orders: row count 9 in the copy, 10 in the source (and 2 more)",
        FailureCategory.VERIFICATION_MISMATCH,
        "table public.orders: row count 9 in the copy, 10 in the source",
    ),
    (
        "VerificationFailed",
        "verification failed: policies: 0 in the copy, 12 in the source",
        FailureCategory.VERIFICATION_MISMATCH,
        "verification failed: policies: 0 in the copy, 12 in the source",
    ),
    (
        "NotEnoughSpace",
        "not enough free space in /opt/supabase_backups: 12 MiB free, about 300 MiB needed for the dump",
        FailureCategory.DISK_FULL,
        "12 MiB free",
    ),
    (
        "TargetBusy",
        "database wehub still has 2 connected session(s) after 60s; the verified copy was not swapped in",
        FailureCategory.TARGET_IN_USE,
        "database wehub still has 2 connected session(s)",
    ),
    (
        "TargetBusy",
        "database wehub__staging still has 1 connected session(s) (pid 4242 monitor@10.0.0.5 'agent') after 300s; "
        "the verified copy was not swapped in and no database was renamed or dropped (end those sessions, or set "
        "on_connected_sessions: terminate)",
        FailureCategory.TARGET_IN_USE,
        "database wehub__staging still has 1 connected session(s) (pid 4242",
    ),
    (
        "ForeignDatabase",
        "VPS database crm was not made by wehub_backup (it carries no wehub_backup mark in its comment); this run "
        "changed nothing (to let backups replace it, run once with adopt_existing_target: true, or wehub-backup "
        "backup --adopt crm; or choose another target)",
        FailureCategory.FOREIGN_DATABASE,
        "VPS database crm was not made by wehub_backup",
    ),
    (
        "NotResumable",
        "a re-execution cannot start at promote_staging_database: its inputs died with run 1f0c (snapshot, "
        "working files, lock); re-execute all steps, or launch a new run",
        FailureCategory.CONFIG,
        "re-execute all steps, or launch a new run",
    ),
    (
        "ConcurrentRun",
        "another backup or migration run for wehub_backup_test is running; this run changed nothing",
        FailureCategory.CONCURRENT_RUN,
        "another backup or migration run for wehub_backup_test is running",
    ),
    (
        "SettingsError",
        "the Supabase server port 6543 is Supabase's transaction pooler, which breaks pg_dump",
        FailureCategory.CONFIG,
        "port 6543",
    ),
    (
        "NotSuperuser",
        "VPS user backup must be a superuser on the VPS server: it recreates Supabase's roles",
        FailureCategory.PERMISSION_DENIED,
        "must be a superuser",
    ),
    (
        "PasswordFileError",
        "password file /root/.pgpass has group or world access (mode 644); run: chmod 600 /root/.pgpass",
        FailureCategory.AUTHENTICATION,
        "chmod 600",
    ),
    (
        "VersionMismatch",
        "no pg_dump/pg_restore/psql found (install postgresql-client, or set WEHUB_PG_BINDIRS)",
        FailureCategory.VERSION_MISMATCH,
        "install postgresql-client",
    ),
    (
        "VersionMismatch",
        "server version mismatch: the server is PostgreSQL 17 but the newest pg_dump here is 15.18; "
        "to dump it install postgresql-client-17 or newer (or set WEHUB_PG_BINDIRS).",
        FailureCategory.VERSION_MISMATCH,
        "the server is PostgreSQL 17",
    ),
    (
        "LockConflict",
        "lock wait on table public.notes gave up after 300 s: session pid 6458 (application_name 'psql', "
        "transaction open 312 s, query started 2026-12-01 23:53:41 UTC) holds ACCESS EXCLUSIVE on it; end that "
        "session's transaction, or raise WEHUB_LOCK_TIMEOUT_SECONDS",
        FailureCategory.LOCK_CONFLICT,
        "lock wait on table public.notes gave up after 300 s: session pid 6458",
    ),
    (
        "LockConflict",
        "lock conflict on table public.blobs: session pid 6953 (application_name 'app-migration', transaction "
        "open 5 s, query started 2026-12-01 23:53:56 UTC) asked for ACCESS EXCLUSIVE while the dump held the "
        "table, and pg_dump would have waited behind it (a deadlock PostgreSQL cannot see); the dump gave way",
        FailureCategory.LOCK_CONFLICT,
        "lock conflict on table public.blobs: session pid 6953",
    ),
    (
        "SourceChanged",
        "table public.readings was rewritten (TRUNCATE, VACUUM FULL, CLUSTER or an ALTER TABLE that rewrites) "
        "after the dump's snapshot was taken (attempts: 3; a snapshot older than such a change cannot see the "
        "table's rows, a rewritten table would look empty)",
        FailureCategory.SOURCE_CHANGED,
        "table public.readings was rewritten",
    ),
    (
        "SourceStalled",
        "no data from the source for 300 s on an open connection (a stopped server process, or a network or "
        "proxy that stopped forwarding): the dump was stopped; check the source, or raise WEHUB_STALL_TIMEOUT_SECONDS",
        FailureCategory.NETWORK,
        "no data from the source for 300 s",
    ),
    (
        "SettingsError",
        "WEHUB_STALL_TIMEOUT_SECONDS must be at least 1 second, not 0",
        FailureCategory.CONFIG,
        "WEHUB_STALL_TIMEOUT_SECONDS must be at least 1 second",
    ),
]


@pytest.mark.parametrize(("error_class", "message", "category", "summary_part"), OWN_ERRORS)
def test_classifies_own_errors_by_class(error_class: str, message: str, category: FailureCategory,
                                        summary_part: str) -> None:
    text = f"Error occurred while executing op \"plan\":\nwehub_backup.errors.{error_class}: {message}"
    cause = classify_failure(text, ("DagsterExecutionStepExecutionError", error_class))
    assert cause.category == category
    assert summary_part in cause.summary
    assert not cause.summary.startswith("wehub_backup")


def test_own_words_without_the_class_are_not_trusted() -> None:
    """A tool or server that happens to print the project's words is classified by its own words."""
    cause = classify_failure("ERROR:  verification failed: table public.orders: row count 9 in the copy")
    assert cause.category == FailureCategory.UNKNOWN


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


def test_a_path_named_like_a_password_is_not_masked() -> None:
    """``'../../etc/passwd': use ...`` names a file; masking the word after it would garble the cause."""
    summary = classify_failure("invalid target database '../../etc/passwd': use lower-case letters").summary
    assert summary == "invalid target database '../../etc/passwd': use lower-case letters"
    assert scrub_secrets("password: hunter2") == "password: ***"
