"""What the migration tests share: a new Supabase-like project, the settings that point a run at
it, and snapshots of everything a migration may or may not change."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from wehub_backup.definitions import build_definitions
from wehub_backup.defs.names import MIGRATION_JOB
from wehub_backup.pg.digests import set_stable_output, table_digest
from wehub_backup_tests.harness.cluster import PostgresCluster, find_local_bindir
from wehub_backup_tests.harness.supabase_like import APP_OWNER, bootstrap_supabase_like, new_supabase_like_cluster
from wehub_backup_tests.support.environment import BackupEnv, SessionPasswords, point_backup_at, start_for_session

APP_SCHEMAS = ("public", "inventory")


def new_project_cluster(name: str, base: Path, password: str, settings: dict[str, str] | None = None) -> PostgresCluster:
    """A Supabase-like cluster as a new project has it: Supabase's schemas, roles and users, no app
    yet; ``settings`` add to its server configuration (a feature's preloaded library, say)."""
    cluster = new_supabase_like_cluster(name, base, find_local_bindir())
    cluster.settings.update(settings or {})
    start_for_session(cluster)
    bootstrap_supabase_like(cluster)
    cluster.set_password(APP_OWNER, password)
    return cluster


def empty_new_project(cluster: PostgresCluster) -> PostgresCluster:
    """Take out what only an older project holds: users, their sessions, buckets and files."""
    cluster.execute("TRUNCATE auth.users, auth.identities, auth.refresh_tokens, storage.buckets, storage.objects")
    return cluster


def new_project_fixture(name: str) -> Callable[..., Iterator[PostgresCluster]]:
    """A module-scoped fixture: a new project of the module's own, so what its migrations do cannot
    disturb the session's source cluster other tests read."""

    @pytest.fixture(scope="module")
    def project(pg_base_dir: Path, session_passwords: SessionPasswords) -> Iterator[PostgresCluster]:
        cluster = new_project_cluster(name, pg_base_dir, session_passwords.supabase_postgres)
        yield cluster
        cluster.destroy()

    return project


def point_migration_at(monkeypatch: pytest.MonkeyPatch, env: BackupEnv, target: PostgresCluster,
                       vps: PostgresCluster, source_db: str) -> BackupEnv:
    """SUPABASE_* at ``target``, LOCAL_DB_NAME at ``source_db``, and a password file for both servers."""
    monkeypatch.setenv("LOCAL_DB_NAME", source_db)
    return dataclasses.replace(point_backup_at(monkeypatch, env, target, vps), local_db=source_db)


def run_migration(instance: dg.DagsterInstance, **config: object) -> dg.ExecuteInProcessResult:
    """One real run of the migration job, with resources from the environment."""
    job = build_definitions().get_job_def(MIGRATION_JOB)
    run_config = {"ops": {"plan_vps_migration": {"config": config}}}
    return job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)


def failure_of(result: dg.ExecuteInProcessResult) -> tuple[str, str]:
    """The failed step and its error text (with the causes Dagster wraps around it)."""
    failed = [event for event in result.all_events if event.is_step_failure]
    assert failed, "the run did not fail"
    return failed[0].step_key, failed[0].event_specific_data.error.to_string()


def step_metadata(result: dg.ExecuteInProcessResult, step: str) -> dict[str, object]:
    outputs = [e for e in result.all_events if e.is_successful_output and e.step_key == step]
    return {key: value.value for key, value in outputs[0].event_specific_data.metadata.items()}


_SNAPSHOT_QUERIES = {
    "schemas": """SELECT nspname, nspowner::regrole::text, coalesce(nspacl::text, '') FROM pg_namespace
                  WHERE nspname = 'public' OR nspname <> ALL(%(skip)s) ORDER BY 1""",
    "relations": """SELECT c.oid::regclass::text, c.relkind, c.relowner::regrole::text, coalesce(c.relacl::text, '')
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname <> ALL(%(skip)s) ORDER BY 1""",
    "defaults": """SELECT a.adrelid::regclass::text, a.adnum, pg_get_expr(a.adbin, a.adrelid) FROM pg_attrdef a
                   JOIN pg_class c ON c.oid = a.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname <> ALL(%(skip)s) ORDER BY 1, 2""",
    "functions": """SELECT p.oid::regprocedure::text, p.proowner::regrole::text, coalesce(p.proacl::text, ''),
                           md5(p.prosrc) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname <> ALL(%(skip)s) ORDER BY 1""",
    "policies": """SELECT schemaname, tablename, policyname, roles::text, qual, with_check FROM pg_policies
                   WHERE schemaname <> ALL(%(skip)s) ORDER BY 1, 2, 3""",
    "triggers": """SELECT t.tgrelid::regclass::text, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid) FROM pg_trigger t
                   JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE NOT t.tgisinternal AND n.nspname <> ALL(%(skip)s) ORDER BY 1, 2""",
    "event_triggers": "SELECT evtname, evtowner::regrole::text, evtenabled FROM pg_event_trigger ORDER BY 1",
    "extensions": "SELECT extname, extnamespace::regnamespace::text, extversion FROM pg_extension ORDER BY 1",
    "default_privileges": """SELECT defaclrole::regrole::text, defaclnamespace::regnamespace::text, defaclobjtype,
                                    defaclacl::text FROM pg_default_acl ORDER BY 1, 2, 3""",
    "publications": "SELECT pubname, pubowner::regrole::text FROM pg_publication ORDER BY 1",
}


def catalog_snapshot(cluster: PostgresCluster, skip_contents_of: tuple[str, ...] = (),
                     dbname: str = "postgres") -> dict[str, object]:
    """Schemas, relations, defaults, functions, policies, triggers, extensions, privileges, and every
    table's row count and content digest, read as the superuser.

    ``skip_contents_of`` leaves out what lies inside those schemas (their own entry stays), to
    compare what a successful migration must not touch.
    """
    skip = ["pg_catalog", "information_schema", "pg_toast", *skip_contents_of]
    with cluster.connect(dbname) as conn:
        conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")
        snapshot: dict[str, object] = {
            name: conn.execute(query, {"skip": skip}).fetchall() for name, query in _SNAPSHOT_QUERIES.items()
            if "%(skip)s" in query
        }
        snapshot.update({name: conn.execute(query).fetchall() for name, query in _SNAPSHOT_QUERIES.items()
                         if "%(skip)s" not in query})
        set_stable_output(conn)
        tables = conn.execute("""SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                 WHERE c.relkind = 'r' AND n.nspname <> ALL(%s) ORDER BY 1, 2""", (skip,)).fetchall()
        snapshot["rows"] = {f"{s}.{t}": table_digest(conn, s, t) for s, t in tables}
    return snapshot
