"""The disaster-recovery drill: docs/disaster-recovery.md, step by step, on real clusters.

A Supabase-like project of its own (seeded like production) is backed up into the VPS with
`wehub-backup backup`, then stopped (the outage). The application fails over to the VPS copy
with the login the runbook prepares and keeps writing; Supabase comes back on the same address;
its state is kept aside with another backup, and `wehub-backup migrate --overwrite` carries the
VPS copy back. Then the other ending: the project is lost, and `wehub-backup migrate --new-project
--with-users` restores the VPS copy into a new one, users and all. Each phase is timed; the figures are printed (run with `-s` to see them) and
attached to the test report as properties. The runbook quotes them.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from wehub_backup import cli
from wehub_backup_tests.harness.cluster import LOOPBACK, PostgresCluster, find_local_bindir, write_pgpass
from wehub_backup_tests.harness.supabase_like import (
    APP_OWNER,
    SUPABASE_SUPERUSER,
    add_app_auth_hooks,
    grant_policy_management,
)
from wehub_backup_tests.support.environment import VPS_SUPERUSER, BackupEnv, SessionPasswords, supabase_like_cluster
from wehub_backup_tests.support.supabase_target import empty_new_project, new_project_cluster

RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "disaster-recovery.md"
PRODUCTION_COPY = "wehub_drill"
SUPABASE_AT_RETURN = "wehub_drill_at_return"
APP_LOGIN = "wehub_app"
LOST_MARKER = "written to Supabase after the last backup"
OUTAGE_MARKER = "written to the VPS copy during the outage"
# What the application login (Supabase's service_role grants) reads; the app's other schemas are
# compared with the owner's login.
APP_TABLES = ("public.profiles", "public.organizations", "public.memberships", "public.audit_log", "public.events")
OWNER_TABLES = ("billing.invoices", "billing.customers", "content.posts", "content.comments")
SIGNUP = "5d0c7a2e-2222-4333-8444-555566667777"


def runbook_sql(label: str) -> str:
    """The SQL block the runbook marks with ``<!-- drill: label -->``, so the drill runs the documented text."""
    match = re.search(rf"<!-- drill: {label} -->\s*```sql\n(.*?)```", RUNBOOK.read_text(encoding="utf-8"), re.DOTALL)
    assert match, f"docs/disaster-recovery.md has no SQL block marked 'drill: {label}'"
    return match.group(1)


@pytest.fixture(scope="module")
def production(pg_base_dir: Path, session_passwords: SessionPasswords) -> Iterator[PostgresCluster]:
    """The drill's own Supabase project: stopped and overwritten here, so no other test may share it."""
    cluster = supabase_like_cluster("supabase_drill", pg_base_dir, find_local_bindir(), session_passwords.supabase_postgres)
    grant_policy_management(cluster)
    add_app_auth_hooks(cluster, user=APP_OWNER)
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module")
def replacement(pg_base_dir: Path, session_passwords: SessionPasswords) -> Iterator[PostgresCluster]:
    """The new project that replaces a lost one: Supabase's schemas and roles, no users, buckets or files."""
    cluster = empty_new_project(new_project_cluster("supabase_drill_new", pg_base_dir,
                                                    session_passwords.supabase_postgres))
    grant_policy_management(cluster)
    yield cluster
    cluster.destroy()


def leave_app_login_as_before_migration(vps: PostgresCluster) -> None:
    """The application's login as the VPS kept it after the migration: a plain login that may own the
    database the migration read (other tests seed one), without the failover's privileges or password."""
    vps.execute(f"""DO $$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_LOGIN}') THEN CREATE ROLE {APP_LOGIN} LOGIN; END IF;
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN REVOKE service_role FROM {APP_LOGIN}; END IF;
    END $$;
    ALTER ROLE {APP_LOGIN} NOBYPASSRLS PASSWORD NULL""")


@pytest.fixture
def drill_env(monkeypatch: pytest.MonkeyPatch, backup_env: BackupEnv, production: PostgresCluster,
              replacement: PostgresCluster, vps_cluster: PostgresCluster) -> Iterator[tuple[BackupEnv, str]]:
    """The service's settings aimed at the drill project, LOCAL_DB_NAME at the production copy, and the
    application's VPS login in the password file (as the runbook's preparation leaves it). The login
    itself starts and ends as the migration left it, so the runbook's preparation is what grants it."""
    app_password = secrets.token_urlsafe(18)
    pgpass = write_pgpass(backup_env.dagster_home.parent / "pgpass-drill", [
        (production, APP_OWNER, backup_env.supabase_password),
        (replacement, APP_OWNER, backup_env.supabase_password),
        (vps_cluster, VPS_SUPERUSER, backup_env.local_password),
        (vps_cluster, APP_LOGIN, app_password),
    ])
    for name, value in {"SUPABASE_DB_PORT": str(production.port), "PGPASSFILE": str(pgpass),
                        "LOCAL_DB_NAME": PRODUCTION_COPY, "WEHUB_BACKUP_TARGET_DB": PRODUCTION_COPY}.items():
        monkeypatch.setenv(name, value)
    for database in (PRODUCTION_COPY, SUPABASE_AT_RETURN):
        for suffix in ("", "__previous", "__staging"):
            vps_cluster.drop_database(f"{database}{suffix}")
    leave_app_login_as_before_migration(vps_cluster)
    yield backup_env, app_password
    leave_app_login_as_before_migration(vps_cluster)


class Stopwatch:
    """Named phases with their durations, for the report and the runbook."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.phases[name] = time.monotonic() - started

    def report(self) -> str:
        width = max(len(name) for name in self.phases)
        return "\n".join(f"  {name:<{width}}  {seconds:6.1f} s" for name, seconds in self.phases.items())


def row_counts(conn: psycopg.Connection, tables: tuple[str, ...] = APP_TABLES) -> dict[str, int]:
    return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}


def markers(conn: psycopg.Connection) -> set[str]:
    return {row[0] for row in conn.execute(
        "SELECT action FROM public.audit_log WHERE action IN (%s, %s)", (LOST_MARKER, OUTAGE_MARKER))}


def connect_tcp(cluster: PostgresCluster, user: str, dbname: str) -> psycopg.Connection:
    """A TCP connection as an application makes it: password from the password file, never in the code."""
    return psycopg.connect(host=LOOPBACK, port=cluster.port, user=user, dbname=dbname, autocommit=True, connect_timeout=5)


def ensure_statistics(vps: PostgresCluster) -> None:
    """Runbook step 1.5: tables without planner statistics get them from vacuumdb, then none is left."""
    unanalyzed = runbook_sql("tables-without-statistics")
    if vps.query(unanalyzed, dbname=PRODUCTION_COPY)[0][0]:
        subprocess.run([str(vps.bindir / "vacuumdb"), "--analyze-in-stages", "--quiet", "-h", str(vps.socket_dir),
                        "-p", str(vps.port), "-U", vps.superuser, "-d", PRODUCTION_COPY], check=True)
    assert vps.query(unanalyzed, dbname=PRODUCTION_COPY) == [(0,)]


def storage_rules(conn: psycopg.Connection) -> list[tuple]:
    """The storage policies and the buckets they guard."""
    policies = conn.execute("SELECT policyname, permissive, roles::text, cmd, qual, with_check FROM pg_policies "
                            "WHERE schemaname = 'storage' ORDER BY 1").fetchall()
    return policies + conn.execute("SELECT id, public FROM storage.buckets ORDER BY 1").fetchall()


def assert_signup_creates_a_profile(project: PostgresCluster) -> None:
    """A sign-up, as Supabase Auth writes it: the app's trigger on auth.users must create the profile."""
    with project.connect(user=SUPABASE_SUPERUSER) as auth_service:
        auth_service.execute("INSERT INTO auth.users (id, email) VALUES (%s, 'drill-signup@example.test')", (SIGNUP,))
        assert auth_service.execute("SELECT count(*) FROM public.profiles WHERE user_id = %s",
                                    (SIGNUP,)).fetchone() == (1,)


def cli_run(*argv: str) -> int:
    return cli.main(list(argv))


def test_failover_to_the_vps_and_return_to_supabase(
    monkeypatch: pytest.MonkeyPatch, drill_env: tuple[BackupEnv, str], production: PostgresCluster,
    replacement: PostgresCluster, vps_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str],
    record_property: pytest.RecordProperty,
) -> None:
    env, app_password = drill_env
    watch = Stopwatch()

    # Before the disaster: the weekly backup into the production copy, and the one-time preparation.
    with watch.phase("weekly backup (wehub-backup backup)"):
        assert cli_run("backup", PRODUCTION_COPY) == 0, capsys.readouterr().out
    assert re.search(rf"SUCCESS target={PRODUCTION_COPY}\b", env.backup_log.read_text())
    vps_cluster.execute(runbook_sql("prepare-app-login"), dbname=PRODUCTION_COPY)
    vps_cluster.set_password(APP_LOGIN, app_password)
    with production.connect(user=APP_OWNER) as conn:
        conn.execute("INSERT INTO public.audit_log (logged_at, action) VALUES (now(), %s)", (LOST_MARKER,))
        supabase_counts = row_counts(conn)
        supabase_users = conn.execute("SELECT count(*) FROM auth.users").fetchone()[0]
        database_size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]

    # Phase 1: Supabase is down; the application moves to the VPS copy and keeps writing.
    production.stop()
    with watch.phase("phase 1: failover (confirm, check copy, first write)"):
        assert cli_run("doctor") == 1
        doctor_lines = capsys.readouterr().out
        assert re.search(r"^FAIL Supabase: cannot connect", doctor_lines, re.MULTILINE), doctor_lines
        assert re.search(r"^OK   VPS:", doctor_lines, re.MULTILINE), doctor_lines
        ensure_statistics(vps_cluster)
        with connect_tcp(vps_cluster, APP_LOGIN, PRODUCTION_COPY) as app:
            copy_counts = row_counts(app)
            assert copy_counts["public.audit_log"] == supabase_counts["public.audit_log"] - 1, "the loss window"
            organization = app.execute(
                "INSERT INTO public.organizations (name, slug) VALUES ('Founded during the outage', 'outage-org') "
                "RETURNING id").fetchone()[0]
            app.execute("INSERT INTO public.audit_log (logged_at, action) VALUES (now(), %s)", (OUTAGE_MARKER,))
            app.execute("UPDATE public.profiles SET bio = 'edited on the VPS' WHERE username = 'user_1'")
    with connect_tcp(vps_cluster, APP_LOGIN, PRODUCTION_COPY) as app:
        vps_counts = row_counts(app)
        assert markers(app) == {OUTAGE_MARKER}
    with connect_tcp(vps_cluster, VPS_SUPERUSER, PRODUCTION_COPY) as owner:
        vps_owner_counts = row_counts(owner, OWNER_TABLES)

    # Phase 2: Supabase is back; keep its state aside, carry the VPS copy back, switch the application back.
    production.restart()
    with watch.phase("phase 2: safety copy of Supabase (wehub-backup backup)"):
        assert cli_run("backup", SUPABASE_AT_RETURN) == 0, capsys.readouterr().out
    with watch.phase("phase 2: return (wehub-backup migrate --overwrite)"):
        assert cli_run("migrate", "--overwrite") == 0, capsys.readouterr().out
    assert re.search(rf"migrate_vps_to_supabase SUCCESS target=\S+ source={PRODUCTION_COPY} rows=\d+",
                     env.migration_log.read_text())
    with watch.phase("phase 2: checks on Supabase and first write"):
        with connect_tcp(production, APP_OWNER, "postgres") as app:
            assert row_counts(app) == vps_counts
            assert row_counts(app, OWNER_TABLES) == vps_owner_counts
            assert markers(app) == {OUTAGE_MARKER}
            assert app.execute("SELECT slug FROM public.organizations WHERE id = %s", (organization,)).fetchone() == (
                "outage-org",)
            assert app.execute("SELECT bio FROM public.profiles WHERE username = 'user_1'").fetchone() == (
                "edited on the VPS",)
            app.execute("INSERT INTO public.organizations (name, slug) VALUES ('Back on Supabase', 'back-org')")
    with connect_tcp(vps_cluster, VPS_SUPERUSER, SUPABASE_AT_RETURN) as kept:
        assert markers(kept) == {LOST_MARKER}, "the safety copy keeps what Supabase had after the last backup"
    assert_signup_creates_a_profile(production)

    # Phase 3, the other ending: the project is lost; the VPS copy goes into a new one, users and all.
    monkeypatch.setenv("SUPABASE_DB_PORT", str(replacement.port))
    with watch.phase("phase 3: new project (wehub-backup migrate --new-project --with-users)"):
        assert cli_run("migrate", "--new-project", "--with-users") == 0, capsys.readouterr().out
    with watch.phase("phase 3: checks on the new project and first write"):
        with connect_tcp(replacement, APP_OWNER, "postgres") as app:
            assert row_counts(app) == vps_counts
            assert row_counts(app, OWNER_TABLES) == vps_owner_counts
            assert markers(app) == {OUTAGE_MARKER}
            assert app.execute("SELECT count(*) FROM auth.users").fetchone() == (supabase_users,)
            with connect_tcp(production, APP_OWNER, "postgres") as original:
                assert storage_rules(app) == storage_rules(original)
        assert_signup_creates_a_profile(replacement)

    report = f"disaster-recovery drill, Supabase database {database_size}, measured:\n" + watch.report()
    for name, seconds in watch.phases.items():
        record_property(name, round(seconds, 1))
    with capsys.disabled():
        print("\n" + report)
