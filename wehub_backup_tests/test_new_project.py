"""A VPS copy migrated into a new Supabase project: what the copy holds in Supabase's own tables.

The VPS copy is a real backup of the session's Supabase-like source plus what nearly every app
adds there (a profile trigger on auth.users, storage policies calling the app's membership check,
a bucket). The new project is a Supabase-like cluster of this module's own without users,
buckets or files, with a webhook trigger of its own on auth.users. The tests build on each
other's state in file order: plans first, then the migration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest

from wehub_backup import cli
from wehub_backup.migration import managed_tables
from wehub_backup.migration.plan import MigrationPlan, MigrationRefused, plan_migration
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.harness.supabase_like import (
    APP_OWNER,
    SUPABASE_SUPERUSER,
    add_app_auth_hooks,
    grant_policy_management,
)
from wehub_backup_tests.support.backup_runs import run_backup
from wehub_backup_tests.support.environment import VPS_SUPERUSER, BackupEnv, SessionPasswords
from wehub_backup_tests.support.supabase_target import (
    catalog_snapshot,
    empty_new_project,
    failure_of,
    new_project_cluster,
    point_migration_at,
)

VPS_COPY = "wehub_for_new_project"
CARRIED = ("auth.users", "auth.identities", "storage.buckets")
SIGNUP = "0b7e3c1a-1111-4222-8333-444455556666"
WEBHOOK = """
    CREATE SCHEMA hooks;
    CREATE TABLE hooks.calls (user_id uuid);
    CREATE FUNCTION hooks.notify_signup() RETURNS trigger LANGUAGE plpgsql AS
      'BEGIN INSERT INTO hooks.calls VALUES (NEW.id); RETURN NEW; END';
    CREATE TRIGGER notify_signup AFTER INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION hooks.notify_signup();
"""


@pytest.fixture(scope="module")
def project(pg_base_dir: Path, session_passwords: SessionPasswords) -> Iterator[PostgresCluster]:
    """A new project: Supabase's schemas and roles, no users, buckets or files; a webhook on auth.users."""
    cluster = empty_new_project(new_project_cluster("supabase_new_project", pg_base_dir,
                                                    session_passwords.supabase_postgres))
    grant_policy_management(cluster)
    cluster.execute(WEBHOOK)
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module")
def copy_name(vps_cluster: PostgresCluster) -> Iterator[str]:
    yield VPS_COPY
    for suffix in ("", "__previous", "__staging"):
        vps_cluster.drop_database(f"{VPS_COPY}{suffix}")


@pytest.fixture
def vps_copy(backup_env: BackupEnv, vps_cluster: PostgresCluster, copy_name: str) -> str:
    """The backup of the session's Supabase-like source, made once, with the app's hooks in auth and storage."""
    if not vps_cluster.query("SELECT 1 FROM pg_database WHERE datname = %s", (copy_name,)):
        with dg.DagsterInstance.ephemeral() as instance:
            backed_up = run_backup(copy_name, instance)
        assert backed_up.success, failure_of(backed_up)
        add_app_auth_hooks(vps_cluster, copy_name)
    return copy_name


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, backup_env: BackupEnv, project: PostgresCluster,
        vps_cluster: PostgresCluster, vps_copy: str) -> BackupEnv:
    return point_migration_at(monkeypatch, backup_env, project, vps_cluster, vps_copy)


def plan(env: BackupEnv, vps: PostgresCluster, project: PostgresCluster, tmp_path: Path,
         **options: object) -> MigrationPlan:
    source = ConnectionInfo(vps.host, vps.port, VPS_SUPERUSER, env.local_db, "disable", env.pgpassfile)
    target = ConnectionInfo(project.host, project.port, APP_OWNER, "postgres", "disable", env.pgpassfile)
    return plan_migration(source, target, tmp_path, secrets_dir=tmp_path, overwrite=False, app_schemas=[],
                          excluded_tables=[], extra_bindirs=[], jobs=1, log=print, **options)  # type: ignore[arg-type]


def test_a_migration_names_what_the_copy_holds_in_supabase_tables_and_the_project_lacks(
    env: BackupEnv, vps_cluster: PostgresCluster, project: PostgresCluster, tmp_path: Path,
) -> None:
    left_out = [str(item) for item in plan(env, vps_cluster, project, tmp_path).left_out]

    absent = "in the VPS copy but not on Supabase"
    assert f"trigger trigger on_auth_user_created on table auth.users: {absent}: a migration into a new project " \
           "(--new-project) creates it; or create it there" in left_out
    for policy in ("Members read their organization's files", "Admins upload organization files"):
        assert any(item.startswith(f"policy policy {policy} on table storage.objects: {absent}") for item in left_out)
    assert f"rows 3 of storage.buckets: {absent}: --new-project carries them" in left_out
    assert f"rows 60 of auth.users: {absent}: --new-project --with-users carries them" in left_out
    assert f"rows 60 of auth.identities: {absent}: --new-project --with-users carries them" in left_out
    assert f"storage files 40 in storage.objects: {managed_tables.NO_FILES}" in left_out

    with pytest.raises(MigrationRefused, match="with_users carries the users into a new project: set "
                                                         "new_project too"):
        plan(env, vps_cluster, project, tmp_path, with_users=True)


def test_users_are_refused_where_the_project_would_fire_its_triggers_for_each(
    env: BackupEnv, vps_cluster: PostgresCluster, project: PostgresCluster, tmp_path: Path,
) -> None:
    project.execute(f"REVOKE SET ON PARAMETER session_replication_role FROM {APP_OWNER}")
    before = catalog_snapshot(project)
    try:
        with pytest.raises(MigrationRefused) as refused:
            plan(env, vps_cluster, project, tmp_path, new_project=True, with_users=True)
    finally:
        project.execute(f"GRANT SET ON PARAMETER session_replication_role TO {APP_OWNER}")
    assert refused.value.problems == [
        "loading the VPS copy's rows would fire trigger notify_signup on table auth.users on Supabase, and postgres "
        "may not hold triggers off (SET session_replication_role = replica is refused; Supabase allows it through "
        "supautils): disable it for the migration"]
    assert catalog_snapshot(project) == before


def test_rows_are_refused_where_the_login_may_not_insert_them(
    env: BackupEnv, vps_cluster: PostgresCluster, project: PostgresCluster, tmp_path: Path,
) -> None:
    project.execute(f"REVOKE INSERT ON auth.users FROM {APP_OWNER}")
    try:
        with pytest.raises(MigrationRefused) as refused:
            plan(env, vps_cluster, project, tmp_path, new_project=True, with_users=True)
    finally:
        project.execute(f"GRANT INSERT ON auth.users TO {APP_OWNER}")
    assert refused.value.problems == ["postgres lacks the INSERT privilege on auth.users on Supabase: its rows "
                                      "cannot be loaded there"]


def test_new_project_gets_the_users_triggers_policies_and_buckets_of_the_copy(
    env: BackupEnv, vps_cluster: PostgresCluster, project: PostgresCluster, vps_copy: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["migrate", "--new-project", "--with-users"]) == 0, capsys.readouterr().out

    printed = capsys.readouterr().out
    assert "rows carried into Supabase's own tables: 123" in printed
    assert f"\n    - storage files 40 in storage.objects: {managed_tables.NO_FILES}" in printed
    copy, migrated = catalog_snapshot(vps_cluster, dbname=vps_copy), catalog_snapshot(project)
    assert {t: migrated["rows"][t] for t in CARRIED} == {t: copy["rows"][t] for t in CARRIED}
    assert [p for p in migrated["policies"] if p[0] == "storage"] == [p for p in copy["policies"] if p[0] == "storage"]
    triggers = [(table, name) for table, name, *_ in migrated["triggers"] if table == "auth.users"]
    assert triggers == [("auth.users", "notify_signup"), ("auth.users", "on_auth_user_created")]
    assert project.query("SELECT count(*) FROM hooks.calls") == [(0,)], "the webhook must not fire for loaded users"
    assert project.query("SELECT count(*) FROM storage.objects") == [(0,)], "file records go only with their files"
    assert project.query("SELECT count(*) FROM auth.refresh_tokens") == [(0,)]

    with project.connect(user=SUPABASE_SUPERUSER) as auth_service:
        auth_service.execute("INSERT INTO auth.users (id, email) VALUES (%s, 'after@example.test')", (SIGNUP,))
    assert project.query("SELECT count(*) FROM public.profiles WHERE user_id = %s", (SIGNUP,)) == [(1,)]
    assert project.query("SELECT count(*) FROM hooks.calls") == [(1,)]
    assert " migrate_vps_to_supabase SUCCESS " in env.migration_log.read_text()

