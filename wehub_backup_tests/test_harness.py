"""The test clusters really have the conditions the backup code must cope with."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import psycopg
import pytest

from wehub_backup.supabase.roles import STANDIN_COMMENT
from wehub_backup_tests.harness.cluster import PostgresCluster, find_local_bindir
from wehub_backup_tests.support.environment import BackupEnv

DEBIAN_PG_DUMP = find_local_bindir() / "pg_dump"


def run_pg_dump(pg_dump: Path, env: BackupEnv, *args: str) -> subprocess.CompletedProcess[str]:
    """pg_dump over TCP as the Supabase login role, password from PGPASSFILE only."""
    return subprocess.run(
        [str(pg_dump), "-h", env.supabase_host, "-p", str(env.supabase_port), "-U", env.supabase_user,
         "-d", env.supabase_db, "--no-password", *args],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )


def test_postgres_is_not_superuser_but_owns_the_app(supabase_cluster: PostgresCluster) -> None:
    rolsuper, rolbypassrls, rolcreaterole = supabase_cluster.query(
        "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = 'postgres'"
    )[0]
    assert (rolsuper, rolbypassrls, rolcreaterole) == (False, True, True)
    owners = supabase_cluster.query(
        "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('public', 'billing', 'content')"
    )
    assert owners == [("postgres",)]
    assert supabase_cluster.query("SELECT usesuper FROM pg_user WHERE usename = 'supabase_admin'") == [(True,)]


def test_whole_database_pg_dump_as_postgres_is_denied(backup_env: BackupEnv) -> None:
    result = run_pg_dump(DEBIAN_PG_DUMP, backup_env, "--schema-only", "-f", os.devnull)
    assert result.returncode != 0
    assert "permission denied for table" in result.stderr


def test_app_schemas_dump_as_postgres_with_password_file(backup_env: BackupEnv) -> None:
    result = run_pg_dump(DEBIAN_PG_DUMP, backup_env, "--schema-only", "-n", "public", "-n", "billing", "-n", "content")
    assert result.returncode == 0, result.stderr
    assert 'CREATE POLICY "Users can view their own profile"' in result.stdout
    assert "REFERENCES auth.users(id)" in result.stdout


def test_wrong_password_is_rejected_over_tcp(supabase_cluster: PostgresCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(supabase_cluster.dsn(user="postgres"), password="definitely-wrong", connect_timeout=5)


def test_postgres_cannot_read_migration_tables_but_reads_auth_users(supabase_cluster: PostgresCluster) -> None:
    assert supabase_cluster.query("SELECT count(*) FROM auth.users", user="postgres")[0][0] == 60
    assert supabase_cluster.query("SELECT count(*) FROM storage.objects", user="postgres")[0][0] == 40
    for table in ("auth.schema_migrations", "storage.migrations", "supabase_functions.migrations"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            supabase_cluster.query(f"SELECT count(*) FROM {table}", user="postgres")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        supabase_cluster.execute("CREATE TABLE auth.mine (id int)", user="postgres")


def test_rls_policies_use_auth_uid_and_target_authenticated(supabase_cluster: PostgresCluster) -> None:
    policies = supabase_cluster.query(
        "SELECT schemaname, tablename, roles::text[], qual FROM pg_policies WHERE schemaname <> 'storage'"
    )
    assert len(policies) >= 5
    profile_select = [p for p in policies if p[1] == "profiles" and p[3] and "auth.uid()" in p[3]]
    assert profile_select and all(p[2] == ["authenticated"] for p in profile_select)


def test_rls_filters_rows_for_authenticated_users(supabase_cluster: PostgresCluster) -> None:
    with supabase_cluster.connect(user="postgres") as conn:
        conn.execute("SET ROLE authenticated")
        conn.execute("SELECT set_config('request.jwt.claim.sub', md5('user7')::uuid::text, false)")
        assert conn.execute("SELECT username FROM public.profiles").fetchall() == [("user_7",)]


def test_large_table_and_odd_objects_exist(supabase_cluster: PostgresCluster) -> None:
    assert supabase_cluster.query("SELECT count(*) FROM public.events")[0][0] >= 100_000
    assert supabase_cluster.query('SELECT count(*) FROM public."Order Items"')[0][0] == 1200
    assert supabase_cluster.query("SELECT count(*) FROM pg_inherits WHERE inhparent = 'content.page_views'::regclass")[0][0] == 3
    assert supabase_cluster.query("SELECT last_value FROM public.ticket_number_seq")[0][0] >= 4242
    assert supabase_cluster.query("SELECT evtname, evtowner::regrole::text FROM pg_event_trigger WHERE evtname = 'pgrst_ddl_watch'") == [
        ("pgrst_ddl_watch", "supabase_admin")
    ]
    assert supabase_cluster.query("SELECT pubowner::regrole::text FROM pg_publication WHERE pubname = 'supabase_realtime'") == [
        ("supabase_admin",)
    ]
    extensions = dict(supabase_cluster.query("SELECT extname, extnamespace::regnamespace::text FROM pg_extension"))
    assert extensions["uuid-ossp"] == "extensions" and extensions["pgcrypto"] == "extensions"
    assert extensions["pg_graphql"] == "graphql" and extensions["supabase_vault"] == "vault"
    raw = supabase_cluster.query("SELECT raw FROM public.weird_values WHERE id = 2")[0][0]
    assert raw.startswith(b"\x00\x01")


def test_vps_lacks_supabase_roles_and_extensions(vps_cluster: PostgresCluster) -> None:
    # Backups earlier in the session may have created NOLOGIN stand-ins, marked by their comment.
    native = vps_cluster.query(
        """SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'supabase_admin')
           AND shobj_description(oid, 'pg_authid') IS DISTINCT FROM %s""", (STANDIN_COMMENT,))
    assert native == []
    assert vps_cluster.query("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_graphql'") == []
    assert vps_cluster.query("SELECT rolsuper FROM pg_roles WHERE rolname = 'postgres'") == [(True,)]


def test_pgpass_file_is_private(pgpass_file: Path, backup_env: BackupEnv) -> None:
    assert stat.S_IMODE(pgpass_file.stat().st_mode) == 0o600
    assert os.environ["PGPASSFILE"] == str(pgpass_file)
    assert all(password in pgpass_file.read_text() for password in backup_env.passwords)
    assert (backup_env.dagster_home / "dagster.yaml").exists()


def test_vps_app_uses_uuid_ossp_from_public(vps_cluster: PostgresCluster, vps_app_database: str) -> None:
    with vps_cluster.connect(vps_app_database) as conn:
        conn.execute("SET search_path = ''")
        default = conn.execute(
            "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'public.customers'::regclass AND adnum = 1"
        ).fetchall()
    assert default == [("public.uuid_generate_v4()",)]
    assert vps_cluster.query("SELECT count(*) FROM public.orders", dbname=vps_app_database)[0][0] == 5000
    assert vps_cluster.query(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [vps_app_database]
    ) == [("wehub_app",)]


def test_postgres_17_source_is_refused_by_local_pg_dump(
    supabase17_cluster: PostgresCluster, backup_env_pg17: BackupEnv
) -> None:
    assert supabase17_cluster.major == 17
    env = backup_env_pg17
    old = run_pg_dump(DEBIAN_PG_DUMP, env, "--schema-only", "-n", "public")
    assert old.returncode != 0 and "server version mismatch" in old.stderr
    new = run_pg_dump(supabase17_cluster.bindir / "pg_dump", env, "--schema-only", "-n", "public")
    assert new.returncode == 0, new.stderr
    assert "CREATE POLICY" in new.stdout
