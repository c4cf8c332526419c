"""Supabase runs PostgreSQL 15 and 17: the dump tools must be at least as new as the server."""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest

from wehub_backup.errors import VersionMismatch
from wehub_backup.pg import clients
from wehub_backup.pg.clients import choose_client
from wehub_backup_tests.harness.cluster import PostgresCluster, find_local_bindir, find_newer_postgres_bindir
from wehub_backup_tests.support.backup_runs import run_backup, step_errors
from wehub_backup_tests.support.environment import BackupEnv


def run_backup_in(target: str, dagster_home: str) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test(temp_dir=dagster_home) as instance:
        return run_backup(target, instance)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(step_errors(result))


def test_choose_client_prefers_newest_and_explains_a_mismatch() -> None:
    local = find_local_bindir()
    newer = find_newer_postgres_bindir()
    assert newer is not None
    assert choose_client(15, [newer]).major == 17
    with pytest.raises(VersionMismatch, match="install postgresql-client-18"):
        choose_client(18, [local])


def test_pg17_source_with_only_pg15_tools_is_refused_before_any_change(
    backup_env_pg17: BackupEnv, vps_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEHUB_PG_BINDIRS", "")
    monkeypatch.setattr(clients, "candidate_bindirs", lambda extra=(): [find_local_bindir()])
    result = run_backup_in("wehub_pg17_refused", str(backup_env_pg17.dagster_home))
    assert not result.success
    text = failure_text(result)
    assert "server version mismatch" in text and "postgresql-client-17" in text
    assert not vps_cluster.query("SELECT 1 FROM pg_database WHERE datname LIKE 'wehub_pg17_refused%'")


def test_pg17_source_backs_up_into_pg15_vps_with_pg17_tools(
    backup_env_pg17: BackupEnv, vps_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEHUB_PG_BINDIRS", str(find_newer_postgres_bindir()))
    result = run_backup_in("wehub_from_pg17", str(backup_env_pg17.dagster_home))
    assert result.success, failure_text(result)
    assert result.output_for_node("plan_supabase_backup").client.major == 17
    assert vps_cluster.query("SELECT count(*) FROM public.events", dbname="wehub_from_pg17")[0][0] >= 100_000


@pytest.mark.parametrize("engine", ["archive", "stream"])
def test_a_transaction_timeout_of_the_pg17_source_login_ends_no_session_of_the_run(
    backup_env_pg17: BackupEnv, supabase17_cluster: PostgresCluster, vps_cluster: PostgresCluster,
    monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    """PostgreSQL 17's ``transaction_timeout``, set for the login, would end the run's snapshot (one
    transaction for the whole dump, and for the stream engine's copy) and each range's reading of the
    source: the project's sessions clear it, as they clear the statement and idle timeouts."""
    monkeypatch.setenv("WEHUB_PG_BINDIRS", str(find_newer_postgres_bindir()))
    monkeypatch.setenv("WEHUB_BACKUP_COPY_ENGINE", engine)
    login, database, copy = backup_env_pg17.supabase_user, backup_env_pg17.supabase_db, f"wehub_pg17_{engine}_timeout"
    supabase17_cluster.execute(f"ALTER ROLE {login} IN DATABASE {database} SET transaction_timeout = '100ms'")
    try:
        with pytest.raises(psycopg.Error, match="transaction timeout"):  # what any other session meets
            supabase17_cluster.query("SELECT pg_sleep(0.3)", dbname=database, user=login)
        result = run_backup_in(copy, str(backup_env_pg17.dagster_home))
    finally:
        supabase17_cluster.execute(f"ALTER ROLE {login} IN DATABASE {database} RESET transaction_timeout")
    assert result.success, failure_text(result)
    assert vps_cluster.query("SELECT count(*) FROM public.events", dbname=copy)[0][0] >= 100_000

