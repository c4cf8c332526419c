"""The backup job end to end: real clusters, real pg_dump/pg_restore, real Dagster runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from wehub_backup.defs.names import BACKUP_JOB, CODE_LOCATION
from wehub_backup.units import human_bytes
from wehub_backup_tests.faults.secrets import ArgumentListSampler
from wehub_backup_tests.faults.sources import CHECK_READING_VAULT_SQL, VAULT_EXTENSION_SQL
from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.harness.supabase_like import APP_OWNER
from wehub_backup_tests.support.backup_runs import databases_named, run_backup, step_errors
from wehub_backup_tests.support.environment import BackupEnv, SessionPasswords, point_backup_at
from wehub_backup_tests.support.polling import wait_until
from wehub_backup_tests.support.supabase_target import new_project_cluster


def test_copy_equals_source_and_verification_is_recorded(
    backup_env: BackupEnv, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster, vps_cluster: PostgresCluster
) -> None:
    result = run_backup("wehub_backup_e2e", instance)
    assert result.success, step_errors(result)

    dump_meta = result.output_for_node("dump_supabase_database")
    assert dump_meta.egress_bytes > dump_meta.artifact_bytes > 0
    verified = result.output_for_node("verify_restored_database")
    assert verified.tables >= 15 and verified.rows >= 100_000

    # Independent of the job's own verification: sample real rows, compared as text.
    for query in (
        "SELECT * FROM public.profiles ORDER BY user_id LIMIT 20",
        'SELECT * FROM public."Order Items" ORDER BY 1 LIMIT 50',
        "SELECT * FROM public.weird_values ORDER BY 1",
        "SELECT count(*), sum(id) FROM public.events",
        "SELECT id::text, email FROM auth.users ORDER BY id",
        "SELECT * FROM content.page_views ORDER BY 1 LIMIT 100",
    ):
        as_text = f"SELECT r::text FROM ({query}) AS r"
        source_rows = supabase_cluster.query(as_text)
        copy_rows = vps_cluster.query(as_text, dbname="wehub_backup_e2e")
        assert copy_rows == source_rows, query
    policies = "SELECT schemaname, tablename, policyname, roles::text, qual FROM pg_policies ORDER BY 1, 2, 3"
    assert vps_cluster.query(policies, dbname="wehub_backup_e2e") == [
        row for row in supabase_cluster.query(policies) if row[0] not in ("realtime", "vault", "graphql")
    ]
    fk_to_auth = vps_cluster.query(
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND confrelid = 'auth.users'::regclass",
        dbname="wehub_backup_e2e")
    assert fk_to_auth[0][0] >= 2
    grants = "SELECT has_table_privilege('authenticated', 'public.profiles', 'SELECT')"
    assert vps_cluster.query(grants, dbname="wehub_backup_e2e") == [(True,)]
    standins = "SELECT rolname, rolconfig FROM pg_roles WHERE rolname IN ('anon', 'supabase_storage_admin') ORDER BY 1"
    assert vps_cluster.query(standins) == supabase_cluster.query(standins) == [
        ("anon", ["statement_timeout=3s"]), ("supabase_storage_admin", ["search_path=storage, extensions"])]
    assert not vps_cluster.query("SELECT 1 FROM pg_roles WHERE rolname = 'anon' AND rolcanlogin")
    assert databases_named(vps_cluster, "wehub_backup_e2e") == {"wehub_backup_e2e"}
    assert not list(backup_env.backup_dir.glob("run-*"))
    log = backup_env.backup_log.read_text()
    assert "START target=wehub_backup_e2e" in log and "SUCCESS target=wehub_backup_e2e" in log

    left_out = result.output_for_node("plan_supabase_backup").scope.left_out
    assert {"pg_graphql", "supabase_vault", "pgrst_ddl_watch", "auth.schema_migrations"} <= {i.name for i in left_out}

    # Numbers stay numbers, each with its readable form beside it; the run's summary is on the run.
    [dump_output] = [e.step_output_data.metadata for e in result.all_events
                     if e.is_successful_output and e.step_key == "dump_supabase_database"]
    assert dump_output["egress_bytes"].value == dump_meta.egress_bytes
    assert dump_output["egress_bytes (readable)"].value == (
        f"{human_bytes(dump_meta.egress_bytes)} ({dump_meta.egress_bytes:,} bytes)")
    assert dump_output["rows (readable)"].value == f"{dump_meta.fingerprint.total_rows:,}"
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["wehub/summary"] == (
        f"SUCCESS; target: wehub_backup_e2e; rows verified: {verified.rows:,}; "
        f"received from Supabase: {human_bytes(dump_meta.egress_bytes)} ({dump_meta.egress_bytes:,} bytes)")
    logged = [record.message for record in instance.all_logs(result.run_id)]
    assert any(message.startswith("backup_supabase_to_vps: SUCCESS (run ") and
               f"  rows verified: {verified.rows:,}" in message for message in logged)


def test_second_run_replaces_target_and_keeps_previous(
    backup_env: BackupEnv, instance: dg.DagsterInstance, scratch_source: str,
    supabase_cluster: PostgresCluster, vps_cluster: PostgresCluster,
) -> None:
    assert run_backup("wehub_generations", instance).success
    supabase_cluster.execute("INSERT INTO public.notes (body) VALUES ('second generation')",
                             dbname=scratch_source, user="postgres")
    second = run_backup("wehub_generations", instance)
    assert second.success, step_errors(second)
    count = "SELECT count(*) FROM public.notes"
    assert vps_cluster.query(count, dbname="wehub_generations") == [(501,)]
    assert vps_cluster.query(count, dbname="wehub_generations__previous") == [(500,)]
    assert databases_named(vps_cluster, "wehub_generations") == {"wehub_generations", "wehub_generations__previous"}


@pytest.fixture
def vps_settings(vps_cluster: PostgresCluster) -> Iterator[Callable[[dict[str, str]], None]]:
    """Change VPS server settings for one test (ALTER SYSTEM and a reload); reset afterwards."""
    changed: list[str] = []

    def apply(settings: dict[str, str]) -> None:
        for name, value in settings.items():
            vps_cluster.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            changed.append(name)
        _reload_until(vps_cluster, settings)

    yield apply
    for name in changed:
        vps_cluster.execute(f"ALTER SYSTEM RESET {name}")
    vps_cluster.execute("SELECT pg_reload_conf()")


def _reload_until(cluster: PostgresCluster, settings: dict[str, str]) -> None:
    """Reload, then wait until new sessions see the settings (the postmaster reloads asynchronously)."""
    cluster.execute("SELECT pg_reload_conf()")
    names = list(settings)
    wait_until(lambda: [v for (v,) in cluster.query("SELECT setting FROM pg_settings WHERE name = ANY(%s) ORDER BY "
                                                    "array_position(%s, name)", (names, names))] == list(settings.values()),
               f"the server to take {settings}", 10, interval=0.05)


def analyzed_at(vps: PostgresCluster, database: str, table: str) -> tuple:
    """When the job (last_analyze) and autovacuum (last_autoanalyze) last analyzed ``table``."""
    return vps.query("SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables WHERE relid = %s::regclass",
                     (table,), dbname=database)[0]


def test_copy_gets_planner_statistics_from_autovacuum_without_a_second_pass(
    backup_env: BackupEnv, instance: dg.DagsterInstance, scratch_source: str,
    vps_cluster: PostgresCluster, vps_settings: Callable[[dict[str, str]], None],
) -> None:
    vps_settings({"autovacuum_naptime": "1"})
    assert run_backup("wehub_statistics_auto", instance).success
    assert analyzed_at(vps_cluster, "wehub_statistics_auto", "public.notes")[0] is None
    wait_until(lambda: analyzed_at(vps_cluster, "wehub_statistics_auto", "public.notes")[1],
               "autovacuum to analyze the copy", 60, interval=0.5)
    stats = "SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = 'notes'"
    assert vps_cluster.query(stats, dbname="wehub_statistics_auto") == [(2,)]


def test_copy_is_analyzed_by_the_job_when_autovacuum_is_off(
    backup_env: BackupEnv, instance: dg.DagsterInstance, scratch_source: str,
    vps_cluster: PostgresCluster, vps_settings: Callable[[dict[str, str]], None],
) -> None:
    vps_settings({"autovacuum": "off"})
    result = run_backup("wehub_statistics_job", instance)
    assert result.success, step_errors(result)
    assert analyzed_at(vps_cluster, "wehub_statistics_job", "public.notes")[0] is not None
    assert vps_cluster.query("SELECT reltuples FROM pg_class WHERE oid = 'public.notes'::regclass",
                             dbname="wehub_statistics_job") == [(500.0,)]


def test_promote_does_not_wait_for_autovacuum_on_the_old_copy(
    backup_env: BackupEnv, instance: dg.DagsterInstance, scratch_source: str, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster, vps_settings: Callable[[dict[str, str]], None],
) -> None:
    # Autovacuum crawls on this one table (100 ms of sleep per page), so it is still at work on the first copy
    # when the second arrives. The table's own storage settings travel with the copy; server-wide ones would
    # slow every database's autovacuum and leave no worker free for this one.
    supabase_cluster.execute("CREATE TABLE public.bulk WITH (autovacuum_vacuum_cost_delay = 100, "
                             "autovacuum_vacuum_cost_limit = 1) AS "
                             "SELECT i, md5(i::text) AS v FROM generate_series(1, 100000) i",
                             dbname=scratch_source, user="postgres")
    vps_settings({"autovacuum_naptime": "1"})
    try:
        assert run_backup("wehub_autovacuum", instance).success
        working = ("SELECT count(*) FROM pg_stat_activity WHERE datname = 'wehub_autovacuum' "
                   "AND backend_type = 'autovacuum worker'")
        wait_until(lambda: vps_cluster.query(working)[0][0], "autovacuum to start on the copy", 60, interval=0.2)
        second = run_backup("wehub_autovacuum", instance, connected_sessions_timeout_seconds=5)
        assert second.success, step_errors(second)
        assert databases_named(vps_cluster, "wehub_autovacuum") == {"wehub_autovacuum", "wehub_autovacuum__previous"}
    finally:
        for name in databases_named(vps_cluster, "wehub_autovacuum"):
            vps_cluster.drop_database(name)


def test_platform_event_trigger_on_a_left_out_function_does_not_stop_the_backup(
    backup_env: BackupEnv, instance: dg.DagsterInstance, scratch_source: str, supabase_cluster: PostgresCluster,
) -> None:
    """Like pgsodium's on Supabase: the platform's event trigger calls a function of a left-out
    schema. Both are left out together, so nothing the copy keeps needs them."""
    supabase_cluster.execute(
        VAULT_EXTENSION_SQL + "CREATE FUNCTION vault.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN END';"
        "CREATE EVENT TRIGGER vault_watch ON ddl_command_end EXECUTE FUNCTION vault.on_ddl();", dbname=scratch_source)
    result = run_backup("wehub_event_trigger", instance)
    assert result.success, step_errors(result)
    left_out = {str(item) for item in result.output_for_node("plan_supabase_backup").scope.left_out}
    assert "event trigger vault_watch: owned by platform superuser supabase_admin" in left_out


def test_restore_error_fails_run_and_leaves_previous_target_untouched(
    backup_env: BackupEnv, instance: dg.DagsterInstance, scratch_source: str,
    supabase_cluster: PostgresCluster, vps_cluster: PostgresCluster,
) -> None:
    assert run_backup("wehub_injected", instance).success
    before = vps_cluster.query("SELECT id, body FROM public.notes ORDER BY id", dbname="wehub_injected")
    # Rows a vanilla VPS cannot load: a check that reads Vault (left out of every copy) in a function body.
    supabase_cluster.execute(VAULT_EXTENSION_SQL, dbname=scratch_source)
    supabase_cluster.execute(CHECK_READING_VAULT_SQL + "INSERT INTO public.notes (body) VALUES ('never copied');",
                             dbname=scratch_source, user="postgres")

    failed = run_backup("wehub_injected", instance)

    assert not failed.success
    errors = step_errors(failed)
    assert any("restore_into_staging_database" in e for e in errors)
    assert any('relation "vault.decrypted_secrets" does not exist' in e for e in errors), errors
    assert vps_cluster.query("SELECT id, body FROM public.notes ORDER BY id", dbname="wehub_injected") == before
    assert databases_named(vps_cluster, "wehub_injected") == {"wehub_injected"}
    assert not list(backup_env.backup_dir.glob("run-*"))
    last_line = backup_env.backup_log.read_text().splitlines()[-1]
    assert "FAILURE target=wehub_injected step=restore_into_staging_database" in last_line
    # The cause comes first: the failure event's own message (not Dagster's wrapper) and the run's tags.
    [failure] = [event.step_failure_data for event in failed.all_events if event.is_step_failure]
    assert failure.error.cls_name == "Failure" and "while executing op" not in failure.error.message
    assert 'relation "vault.decrypted_secrets" does not exist' in failure.user_failure_data.description
    assert "\n" not in failure.user_failure_data.description
    shown = failure.user_failure_data.metadata
    assert (shown["failure_kind"].value, shown["failure_summary"].value) == (
        "missing object", "missing relation vault.decrypted_secrets")
    run = instance.get_run_by_id(failed.run_id)
    assert run is not None
    assert (run.tags["wehub/failure"], run.tags["wehub/failure_kind"]) == (
        "missing relation vault.decrypted_secrets", "missing object")
    summary = run.tags["wehub/summary"]
    assert summary.startswith("FAILURE; failed step: restore_into_staging_database; cause: ")
    assert 'relation "vault.decrypted_secrets" does not exist' in summary and "target: wehub_injected" in summary
    assert "vault.decrypted_secrets" in last_line


def test_writer_during_backup_does_not_break_verification(
    backup_env: BackupEnv, instance: dg.DagsterInstance, scratch_source: str,
    supabase_cluster: PostgresCluster, vps_cluster: PostgresCluster,
) -> None:
    stop = threading.Event()
    inserted = []

    def write() -> None:
        with supabase_cluster.connect(scratch_source, user="postgres") as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO public.notes (body) VALUES ('written during the backup')")
                inserted.append(1)
                time.sleep(0.002)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        time.sleep(0.2)
        result = run_backup("wehub_with_writer", instance)
    finally:
        stop.set()
        writer.join()
    assert result.success, step_errors(result)
    copied = vps_cluster.query("SELECT count(*) FROM public.notes", dbname="wehub_with_writer")[0][0]
    total = supabase_cluster.query("SELECT count(*) FROM public.notes", dbname=scratch_source)[0][0]
    assert 500 < copied < total, "the writer must have written both before and after the snapshot"
    assert len(inserted) == total - 500


def test_passwords_appear_in_no_log_metadata_config_or_argv(
    backup_env: BackupEnv, instance: dg.DagsterInstance, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with ArgumentListSampler(interval=0.01) as sampler:
        result = run_backup("wehub_secrets", instance)
    assert result.success, step_errors(result)
    assert any("pg_dump" in argv for argv in sampler.seen), "the sampler must have seen pg_dump running"
    assert any("pg_restore" in argv for argv in sampler.seen)

    records = instance.all_logs(result.run_id)
    event_text = "\n".join(dg.serialize_value(r) for r in records)
    run = instance.get_run_by_id(result.run_id)
    haystacks = {
        "argv": "\n".join(sampler.seen),
        "event log": event_text,
        "run config": repr(run.run_config),
        "run tags": repr(run.tags),
        "plan log": backup_env.backup_log.read_text(),
        "captured output": "".join(capfd.readouterr()),
        "instance files": "\n".join(
            p.read_bytes().decode("latin-1") for p in backup_env.dagster_home.rglob("*") if p.is_file()),
    }
    assert "pg_dump" in haystacks["event log"] or "egress_bytes" in haystacks["event log"]
    for password in backup_env.passwords:
        for where, text in haystacks.items():
            assert password not in text, f"password found in {where}"


def test_command_line_runs_a_recorded_dagster_run(backup_env: BackupEnv, vps_cluster: PostgresCluster) -> None:
    command = [sys.executable, "-m", "wehub_backup.cli", "backup", "wehub_from_cli"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "backup_supabase_to_vps: SUCCESS" in done.stdout
    assert "rows verified:" in done.stdout
    assert "received from Supabase:" in done.stdout
    with dg.DagsterInstance.from_config(str(backup_env.dagster_home)) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name=BACKUP_JOB))
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
        assert runs[0].tags["wehub/target"] == "wehub_from_cli"
        # A run of the code location's job, as the UI lists and re-executes them (by location and repository).
        origin = runs[0].remote_job_origin
        assert origin is not None and (origin.location_name, origin.repository_origin.repository_name) == (
            CODE_LOCATION, "__repository__")
        listed = instance.get_runs(dg.RunsFilter(job_name=BACKUP_JOB, tags={
            REPOSITORY_LABEL_TAG: f"__repository__@{CODE_LOCATION}"}))
        assert [r.run_id for r in listed] == [runs[0].run_id]
    assert vps_cluster.query("SELECT count(*) FROM auth.users", dbname="wehub_from_cli")[0][0] > 0

    refused = subprocess.run([sys.executable, "-m", "wehub_backup.cli", "backup", "bad;name"],
                             capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert refused.returncode == 1
    assert "invalid target database 'bad;name'" in refused.stdout


@pytest.fixture(scope="module")
def cron_project(pg_base_dir: Path, session_passwords: SessionPasswords) -> Iterator[PostgresCluster]:
    """A project with Supabase Cron on: pg_cron preloaded, created in pg_catalog, a job scheduled."""
    cluster = new_project_cluster("cronsrc", pg_base_dir, session_passwords.supabase_postgres, {
        "shared_preload_libraries": "pg_stat_statements,pg_cron", "cron.database_name": "postgres"})
    cluster.execute("CREATE EXTENSION pg_cron WITH SCHEMA pg_catalog;"
                    "GRANT USAGE ON SCHEMA cron TO postgres; GRANT SELECT ON ALL TABLES IN SCHEMA cron TO postgres;"
                    "SELECT cron.schedule('nightly-report', '0 3 * * *', 'SELECT 1')")
    cluster.execute("CREATE TABLE public.reports (id int PRIMARY KEY); INSERT INTO public.reports VALUES (1), (2)",
                    user=APP_OWNER)
    yield cluster
    cluster.destroy()


def test_pg_cron_is_left_out_even_where_the_vps_has_the_package(
    monkeypatch: pytest.MonkeyPatch, backup_env: BackupEnv, instance: dg.DagsterInstance,
    cron_project: PostgresCluster, vps_cluster: PostgresCluster,
) -> None:
    """The VPS has postgresql-NN-cron installed but not preloaded (as the package leaves it), and a
    copy database is never cron.database_name: creating the extension there would fail every run."""
    assert vps_cluster.query("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_cron'") == [(1,)]
    point_backup_at(monkeypatch, backup_env, cron_project, vps_cluster)
    result = run_backup("wehub_cron", instance)
    assert result.success, step_errors(result)
    left_out = {(item.kind, item.name) for item in result.output_for_node("plan_supabase_backup").scope.left_out}
    assert ("extension", "pg_cron") in left_out
    assert vps_cluster.query("SELECT count(*) FROM public.reports", dbname="wehub_cron") == [(2,)]
    assert vps_cluster.query("SELECT count(*) FROM pg_namespace WHERE nspname = 'cron'", dbname="wehub_cron") == [(0,)]
