"""No password in a log file, a Dagster storage row, a metadata value, an alert, or any
process's argument list, across the whole test session; no alert secret in the environment
of a client program; files a run creates private whatever the umask; and passwords read from
the password file exactly as libpq reads them.

pytest imports every test module before it runs the first test, so the sampler started when
this module is imported watches argument lists for the whole session. ``suite_audit`` is
session-scoped: the tests here check everything written so far, and its teardown checks
again once the last test of the session has finished (a finding fails that teardown).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from wehub_backup.config import child_environment
from wehub_backup.defs.resources import AlertSettings, backup_workspace_from_env
from wehub_backup.errors import PasswordFileError
from wehub_backup.files import RUN_LOG_MODE
from wehub_backup.pg.clients import CLIENT_PROGRAMS, choose_client
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.passfile import PassEntry, lookup_password, write_private_passfile
from wehub_backup.pg.processes import run_tool
from wehub_backup_tests.faults.evidence import step_failure
from wehub_backup_tests.faults.secrets import (
    ArgumentListSampler,
    ChildEnvironmentSampler,
    ModeSampler,
    files_with_secrets,
)
from wehub_backup_tests.faults.sources import (
    CHECK_READING_VAULT_SQL,
    NOTES_SQL,
    VAULT_EXTENSION_SQL,
    recreate_source,
)
from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.support.backup_runs import alert_on_failed_run, run_backup, step_errors
from wehub_backup_tests.support.environment import BackupEnv, SessionPasswords
from wehub_backup_tests.support.loopback_servers import running_webhook_receiver
from wehub_backup_tests.support.polling import wait_until
from wehub_backup_tests.support.supabase_target import new_project_fixture, point_migration_at, run_migration

SESSION_SAMPLER = ArgumentListSampler(interval=0.05).start()
PLAN_LOGS = (Path("/var/log/supabase_backup.log"), Path("/var/log/supabase_migration.log"))

Findings = Callable[[], dict[str, list[str]]]


@pytest.fixture(scope="session")
def suite_audit(tmp_path_factory: pytest.TempPathFactory, session_passwords: SessionPasswords,
                pg_base_dir: Path) -> Iterator[Findings]:
    """Where the session's passwords turned up; checked again when the session ends."""
    secrets = [session_passwords.supabase_postgres, session_passwords.vps_postgres]

    def findings() -> dict[str, list[str]]:
        return {
            "files the tests wrote (logs, Dagster storage, working files)":
                files_with_secrets([tmp_path_factory.getbasetemp()], secrets),
            "the plan's log files": files_with_secrets(PLAN_LOGS, secrets),
            "PostgreSQL server logs": files_with_secrets([pg_base_dir], secrets, "*.log"),
            "process argument lists": SESSION_SAMPLER.holding(secrets),
        }

    yield findings
    leaks = {where: found for where, found in findings().items() if found}
    assert not leaks, f"a password turned up after the test session: {leaks}"


def test_failed_run_and_its_alert_hold_no_password(
    backup_env: BackupEnv, supabase_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch,
    suite_audit: Findings,
) -> None:
    """A run that gets as far as the restore (every program has run, with every password in
    play) and fails there; its alert goes to a real webhook receiver."""
    source = recreate_source(supabase_cluster, "secrets_source", NOTES_SQL + CHECK_READING_VAULT_SQL, VAULT_EXTENSION_SQL)
    monkeypatch.setenv("SUPABASE_DB_NAME", source)
    try:
        with dg.instance_for_test(temp_dir=str(backup_env.dagster_home)) as instance, \
                running_webhook_receiver() as receiver:
            result = run_backup("wehub_secrets_alert", instance)
            assert step_failure(result)[0] == "restore_into_staging_database"
            alert_on_failed_run(instance, result.dagster_run, result.get_run_failure_event(),
                                AlertSettings(webhook_url=receiver.url))
            records = "\n".join(dg.serialize_value(record) for record in instance.all_logs(result.run_id))
    finally:
        supabase_cluster.drop_database(source)

    [alert] = receiver.payloads
    assert "decrypted_secrets" in alert["text"]
    for password in backup_env.passwords:
        assert password not in alert["text"]
        assert password not in records
    assert any("pg_dump --format=directory" in argv for argv in SESSION_SAMPLER.seen)
    assert any("pg_restore " in argv for argv in SESSION_SAMPLER.seen)
    leaks = {where: found for where, found in suite_audit().items() if found}
    assert not leaks


def test_nothing_written_so_far_holds_a_password(suite_audit: Findings) -> None:
    assert SESSION_SAMPLER.passes > 0, "the argument-list sampler never ran"
    leaks = {where: found for where, found in suite_audit().items() if found}
    assert not leaks


# --- what a run's client programs and files get ------------------------------------------------

project = new_project_fixture("secretsproj")  # a Supabase project of its own, which migrations here replace
CONNECTING_PROGRAMS = ("pg_dump --format=directory", "pg_restore --dbname=", "psql ")


def backup_and_migration(monkeypatch: pytest.MonkeyPatch, backup_env: BackupEnv, instance: dg.DagsterInstance,
                         project: PostgresCluster, vps: PostgresCluster, vps_app_database: str) -> None:
    """A real backup, then a real migration of the VPS application into ``project``; both succeed."""
    backed_up = run_backup("wehub_secrets_files", instance)
    assert backed_up.success, step_errors(backed_up)
    point_migration_at(monkeypatch, backup_env, project, vps, vps_app_database)
    migrated = run_migration(instance, overwrite=True)
    assert migrated.success, step_errors(migrated)


def test_client_programs_get_no_alert_secret(
    backup_env: BackupEnv, instance: dg.DagsterInstance, project: PostgresCluster, vps_cluster: PostgresCluster,
    vps_app_database: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The environment of every pg_dump, pg_restore and psql a backup and a migration start, read
    from /proc while each runs: the alert channels' secrets are this process's, never theirs.
    (Dagster's own helper processes, such as its log watchers, inherit Dagster's environment.)"""
    smtp_password, webhook_token = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    monkeypatch.setenv("WEHUB_ALERT_SMTP_PASSWORD", smtp_password)
    monkeypatch.setenv("WEHUB_ALERT_WEBHOOK_URL", f"https://hooks.example/{webhook_token}")
    with ChildEnvironmentSampler() as sampler:
        backup_and_migration(monkeypatch, backup_env, instance, project, vps_cluster, vps_app_database)

    clients = {argv: environment for argv, environment in sampler.environments.items()
               if Path(argv.split(" ", 1)[0]).name in CLIENT_PROGRAMS}
    sampled = {program: [argv for argv in clients if program in argv] for program in CONNECTING_PROGRAMS}
    assert all(sampled.values()), f"a program's environment was never read: {sampled}"
    assert [argv for argv in sampler.holding([smtp_password, webhook_token]) if argv in clients] == []
    for argv, environment in clients.items():
        names = {entry.split("=", 1)[0] for entry in environment if entry}
        assert not {name for name in names if name.startswith(("WEHUB_", "DAGSTER_", "SUPABASE_", "LOCAL_DB_"))}, argv
    for argv in (argv for found in sampled.values() for argv in found):
        assert any(entry.startswith("PGPASSFILE=") for entry in clients[argv]), argv


@contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def test_files_a_run_creates_are_private_under_umask_000(
    backup_env: BackupEnv, instance: dg.DagsterInstance, project: PostgresCluster, vps_cluster: PostgresCluster,
    vps_app_database: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Working directories, the archive pg_dump writes, listings, restore lists, password files,
    the migration's scripts and the plain-text logs, each seen while the runs went on."""
    logs = (backup_env.backup_log, backup_env.migration_log)
    secrets = backup_workspace_from_env().process_config_and_initialize().runtime_root()  # the password files
    secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
    with umask(0), ModeSampler([backup_env.backup_dir, secrets, *logs]) as files:
        backup_and_migration(monkeypatch, backup_env, instance, project, vps_cluster, vps_app_database)

    names = {path.name for path in files.modes}
    assert {"archive", "toc.dat", "archive.listing", "restore.list", "vps.pgpass", "source.pgpass",
            "pre-data.sql", "data.sql", "privileges.sql", "main.list"} <= names, sorted(names)
    assert files.widened({log: RUN_LOG_MODE for log in logs}) == {}
    assert {files.modes[log] for log in logs} == {RUN_LOG_MODE}


def test_a_command_line_run_keeps_dagsters_files_private_under_umask_000(
    backup_env: BackupEnv, tmp_path: Path,
) -> None:
    """Dagster's SQLite storage and logs in a new DAGSTER_HOME, and the command's lock file there."""
    home = tmp_path / "cli_dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    done = subprocess.run([sys.executable, "-m", "wehub_backup.cli", "backup", "wehub_secrets_cli"],
                          env={**os.environ, "DAGSTER_HOME": str(home)}, umask=0, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    with ModeSampler([home]) as files:
        pass
    created = {path: mode for path, mode in files.modes.items() if path not in (home, home / "dagster.yaml")}
    assert home / ".wehub-backup.lock" in created and any(path.suffix == ".db" for path in created), sorted(created)
    assert {str(path): f"{mode:o}" for path, mode in created.items() if mode & 0o077} == {}


def test_the_code_location_makes_the_umask_private(backup_env: BackupEnv, tmp_path: Path) -> None:
    """A real code server (``dagster api grpc``, as the webserver and the daemon start one) started
    under umask 000: once it has loaded the definitions, its umask is 077."""
    socket = tmp_path / "code.sock"
    server = subprocess.Popen([str(Path(sys.executable).with_name("dagster")), "api", "grpc", "--module-name",
                               "wehub_backup.definitions", "--socket", str(socket)],
                              env=os.environ.copy(), umask=0, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(socket.exists, "the code server to load the definitions and listen", 120)
        status = Path(f"/proc/{server.pid}/status").read_text()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "Umask:\t0077" in status.splitlines(), status


# --- the password file, read as libpq reads it ---------------------------------------------------

# Every character Python's str.splitlines() takes for a line break, but libpq does not.
LINE_SEPARATORS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]


@pytest.mark.parametrize("separator", LINE_SEPARATORS, ids=lambda c: f"U+{ord(c):04X}")
def test_a_password_may_hold_any_line_separator_but_a_newline(tmp_path: Path, separator: str) -> None:
    password = f"be{separator}fore:after\\{separator}"
    path = write_private_passfile(tmp_path / "pgpass", [PassEntry("db.example", "5432", "*", "postgres", password)])
    assert lookup_password(path, "db.example", 5432, "postgres", "postgres") == password


@pytest.mark.parametrize(("text", "expected"), [
    ("h:5432:d:u:secret\r\n", "secret"),  # a Windows line end
    ("#h:5432:d:u:commented\nh:5432:d:u:real\n", "real"),  # a comment
    (" #h:5432:d:u:not-a-comment\n", None),  # only a # at the very start makes one
    ("\\*:5432:d:u:escaped-star\n*:5432:d:u:wildcard\n", "wildcard"),  # \* is a star, not a wildcard
    ("h:5432:d:u:pass:word\n", "pass"),  # the password ends at an unescaped colon
    ("h:5432:d:u:p\\\\a\\:ss\n", "p\\a:ss"),  # \\ and \:
    ("h:5432:d:u:trailing\\\n", "trailing\\"),  # a backslash at the end stays
    ("h:5432:d:u\n", None),  # no password field: no match
    ("h:*:d:u:first\nh:5432:d:u:second\n", "first"),  # the first matching line wins
    ("h:5432:d:u:no line end", "no line end"),
])
def test_the_password_file_is_read_as_libpq_reads_it(tmp_path: Path, text: str, expected: str | None) -> None:
    path = tmp_path / "pgpass"
    path.write_bytes(text.encode())
    path.chmod(0o600)
    if expected is None:
        with pytest.raises(PasswordFileError, match="no entry for u@h:5432/d"):
            lookup_password(path, "h", 5432, "d", "u")
    else:
        assert lookup_password(path, "h", 5432, "d", "u") == expected


def test_a_password_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    path.write_bytes(b"other:5432:d:u:\xff\nh:5432:d:u:fine\n")
    path.chmod(0o600)
    assert lookup_password(path, "h", 5432, "d", "u") == "fine"
    with pytest.raises(PasswordFileError, match="the password for u@other:5432/d in password file .* is not UTF-8"):
        lookup_password(path, "other", 5432, "d", "u")


def test_a_role_whose_password_holds_line_separators_logs_in(vps_cluster: PostgresCluster, tmp_path: Path) -> None:
    """A real role with U+2028 and U+0085 in its password: psql finds it in the operator's password
    file, and so do the project's own connections and the private file it hands to a child."""
    role, password = "wehub_separators", f"line\u2028separator\x85next-line-{secrets.token_urlsafe(6)}"
    vps_cluster.execute(f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN")
    vps_cluster.set_password(role, password)
    passfile = write_private_passfile(tmp_path / "operator.pgpass",
                                      [PassEntry(vps_cluster.host, str(vps_cluster.port), "*", role, password)])
    login = ConnectionInfo(vps_cluster.host, vps_cluster.port, role, "postgres", "disable", passfile)
    psql = choose_client(vps_cluster.major).program("psql")
    try:
        by_libpq = subprocess.run([psql, "--no-psqlrc", "--no-password", "-tAc", "SELECT current_user",
                                   f"host={vps_cluster.host} port={vps_cluster.port} dbname=postgres user={role}"],
                                  env=child_environment({"PGPASSFILE": str(passfile)}),
                                  capture_output=True, text=True, timeout=30)
        assert by_libpq.stdout.strip() == role, by_libpq.stderr
        with login.connect() as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == role
        with login.tool_environment(tmp_path / "child.pgpass") as env:
            run = run_tool([psql, "--no-psqlrc", "--no-password", "-c", "SELECT 1"], env)
        assert run.returncode == 0
    finally:
        vps_cluster.execute(f"DROP ROLE {role}")
