"""The test session's servers and settings: two real clusters, their passwords, and the run environment."""

from __future__ import annotations

import atexit
import dataclasses
from pathlib import Path

import pytest

from wehub_backup_tests.harness.cluster import (
    PostgresCluster,
    write_pgpass,
)
from wehub_backup_tests.harness.supabase_like import (
    APP_OWNER,
    new_supabase_like_cluster,
    prepare_supabase_like,
)

VPS_SUPERUSER = "postgres"


VPS_APP_DATABASE = "vps_app"


MONEY_LOCALE = "de_DE.UTF-8"  # prints money as "1.234,50 €", unlike C's "$1,234.50"


@dataclasses.dataclass(frozen=True)
class SessionPasswords:
    """Random per-session passwords; tests grep logs and metadata for them to prove nothing leaks."""

    supabase_postgres: str
    vps_postgres: str


@dataclasses.dataclass(frozen=True)
class BackupEnv:
    """The environment a backup or migration run sees, as set by the `backup_env` fixture."""

    supabase_host: str
    supabase_port: int
    supabase_user: str
    supabase_db: str
    local_host: str
    local_port: int
    local_user: str
    local_db: str
    pgpassfile: Path
    backup_dir: Path
    backup_log: Path
    migration_log: Path
    dagster_home: Path
    supabase_password: str
    local_password: str

    @property
    def passwords(self) -> tuple[str, str]:
        """Every secret of the session, for leak checks."""
        return (self.supabase_password, self.local_password)


def start_for_session(cluster: PostgresCluster) -> PostgresCluster:
    """Start a cluster and make sure it is destroyed even if pytest never reaches teardown."""
    atexit.register(cluster.destroy)
    return cluster.start()


def supabase_like_cluster(name: str, base: Path, source_bindir: Path, password: str) -> PostgresCluster:
    """A started, bootstrapped and seeded Supabase-like cluster whose `postgres` can log in over TCP."""
    return prepare_supabase_like(start_for_session(new_supabase_like_cluster(name, base, source_bindir)), password)


def start_vps_cluster(name: str, base: Path, password: str) -> PostgresCluster:
    """A started vanilla VPS PostgreSQL whose superuser `postgres` logs in over TCP with `password`."""
    cluster = start_for_session(PostgresCluster(name, base, superuser=VPS_SUPERUSER))
    cluster.set_password(VPS_SUPERUSER, password)
    return cluster


def point_backup_at(monkeypatch: pytest.MonkeyPatch, env: BackupEnv, source: PostgresCluster,
                    vps: PostgresCluster) -> BackupEnv:
    """SUPABASE_* at another Supabase-like ``source``, and a password file for it and the VPS."""
    pgpass = write_pgpass(env.dagster_home.parent / f"pgpass-{source.name}", [
        (source, APP_OWNER, env.supabase_password), (vps, VPS_SUPERUSER, env.local_password)])
    monkeypatch.setenv("SUPABASE_DB_PORT", str(source.port))
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    return dataclasses.replace(env, supabase_port=source.port, pgpassfile=pgpass)
