"""Faults on the source side of the dump: table rewrites, locks other sessions hold or ask for,
and a source that stops sending. Each runs the real job against the Supabase-like source, with
an application session of the test's own taking the locks and making the changes.

Races are made deterministic by the locks themselves: the application's transaction holds its
lock, or its uncommitted rewrite, until the run has reached the moment the test wants.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from wehub_backup.alerts.classify import classify_failure
from wehub_backup.defs.sensors import run_failure_of
from wehub_backup.errors import FailureCategory
from wehub_backup.pg import snapshot
from wehub_backup.pg.connection import APPLICATION_NAME, ConnectionInfo
from wehub_backup.pg.passfile import PassEntry, write_private_passfile
from wehub_backup.pg.relay import relayed_connection
from wehub_backup_tests.faults.evidence import leftovers, run_sessions_copying, step_failure
from wehub_backup_tests.faults.process import Watcher
from wehub_backup_tests.faults.relay import FaultRelay
from wehub_backup_tests.faults.sources import NOTES_SQL, blobs_sql, recreate_source
from wehub_backup_tests.harness.cluster import LOOPBACK, PostgresCluster
from wehub_backup_tests.harness.supabase_like import APP_OWNER
from wehub_backup_tests.support.backup_runs import databases_named, run_backup, step_errors
from wehub_backup_tests.support.environment import BackupEnv
from wehub_backup_tests.support.supabase_target import step_metadata
from wehub_backup_tests.test_faults import (  # noqa: F401 - fixtures
    BLOB_BYTES,
    BLOB_ROWS,
    PACED,
    FaultEnv,
    MiB,
    fault_dagster_home,
    fault_source,
    faults,
)

LOCKS_SOURCE = "locks_source"
TARGET = "wehub_source_faults"
APP = "app-migration"  # the application_name of the test's application session
READINGS = 1000
# events first: pg_dump locks tables in the order of their OIDs, so it waits for events holding
# no lock on notes, as in the deadlock PostgreSQL cannot see.
LOCKS_SQL = f"""
CREATE TABLE public.events (id integer NOT NULL, day date NOT NULL, note text) PARTITION BY RANGE (day);
CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO public.events SELECT i, DATE '2024-01-01' + i % 300, 'event ' || i FROM generate_series(1, 200) i;
CREATE TABLE public.readings (id integer PRIMARY KEY, value float8 NOT NULL);
INSERT INTO public.readings SELECT i, i / 4.0 FROM generate_series(1, {READINGS}) i;
""" + NOTES_SQL + blobs_sql(BLOB_ROWS, BLOB_BYTES)
REWRITE = "ALTER TABLE public.readings ADD COLUMN noise float8 DEFAULT random()"  # rewrites the table


@pytest.fixture
def source_faults(faults: FaultEnv, supabase_cluster: PostgresCluster) -> Iterator[FaultEnv]:
    """Runs back up a fresh ``locks_source`` through the test's relays (a test may change its tables)."""
    recreate_source(supabase_cluster, LOCKS_SOURCE, LOCKS_SQL)
    faults.route_source(supabase_cluster, LOCKS_SOURCE)
    yield faults
    supabase_cluster.drop_database(LOCKS_SOURCE)


def app_session(faults: FaultEnv) -> psycopg.Connection:
    """An application's session on the source (autocommit: it says BEGIN when it wants a transaction)."""
    conn = faults.source.connect(LOCKS_SOURCE, user=APP_OWNER)
    conn.execute(f"SET application_name = '{APP}'")
    return conn


def snapshot_exported(cluster: PostgresCluster) -> bool:
    """A transaction on the server holds an exported snapshot (pg_dump --snapshot reads such a file)."""
    return any((cluster.data_dir / "pg_snapshots").iterdir())


def run_sessions_idle(cluster: PostgresCluster) -> bool:
    """No session of the run on the source is working: each is idle or waits for a lock."""
    return cluster.query(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = %s"
        " AND state = 'active' AND wait_event_type IS DISTINCT FROM 'Lock'", (APPLICATION_NAME, LOCKS_SOURCE))[0][0] == 0


def run_holds(cluster: PostgresCluster, table: str) -> bool:
    return cluster.query(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE a.application_name = %s AND l.relation = %s::regclass AND l.granted",
        (APPLICATION_NAME, table), dbname=LOCKS_SOURCE)[0][0] > 0


def steadily(condition: Callable[[], bool], seconds: float = 0.5) -> Callable[[], bool]:
    """``condition``, once it has held at every poll for ``seconds`` (a run between two of its
    statements is idle for an instant; a run that waits stays so)."""
    since: list[float] = []

    def check() -> bool:
        if not condition():
            since.clear()
            return False
        since[:] = since or [time.monotonic()]
        return time.monotonic() - since[0] >= seconds

    return check


class Statement:
    """One statement of the application's session, run from a thread (it may wait for the run)."""

    def __init__(self, conn: psycopg.Connection, *statements: str) -> None:
        self.conn, self.statements = conn, statements
        self.error: str | None = None
        self.done = threading.Event()

    def __call__(self) -> None:
        try:
            for statement in self.statements:
                self.conn.execute(statement)  # type: ignore[arg-type]
        except psycopg.Error as error:
            self.error = str(error).strip()
            self.conn.execute("ROLLBACK")
        finally:
            self.done.set()


def failure_category(result: dg.ExecuteInProcessResult) -> FailureCategory:
    """The category the failure alert gives the run: its error chain's classes first, then its words."""
    event = next(event for event in result.all_events if event.is_step_failure)
    failure = run_failure_of(event.step_key, event.step_failure_data.error)
    return classify_failure(failure.error_text, failure.error_classes).category


def run_log_messages(faults: FaultEnv, run_id: str) -> list[str]:
    return [entry.user_message for entry in faults.instance.all_logs(run_id)]


# --- a rewrite that commits after the snapshot --------------------------------------------------

def rewrite_committed_after_the_export(faults: FaultEnv, change: str = REWRITE) -> tuple[Watcher, psycopg.Connection]:
    """The rewrite (or another change), uncommitted (its ACCESS EXCLUSIVE lock held), committing
    once the dump's snapshot is exported: the snapshot cannot see the rewritten table's rows."""
    rewriter = app_session(faults)
    rewriter.execute("BEGIN")
    rewriter.execute(change)  # type: ignore[arg-type]
    watcher = Watcher(lambda: snapshot_exported(faults.source), lambda: rewriter.execute("COMMIT"),
                      timeout=60, act_on_timeout=True)
    return watcher, rewriter


def test_a_rewrite_committing_after_the_snapshot_is_seen_and_the_snapshot_taken_again(
        source_faults: FaultEnv) -> None:
    watcher, rewriter = rewrite_committed_after_the_export(source_faults)
    with watcher, rewriter:
        result = source_faults.run(TARGET)
    assert watcher.fired, "the run never exported its snapshot"
    assert result.success, step_errors(result)
    copied = source_faults.vps.query("SELECT count(*) FROM public.readings", dbname=TARGET)[0][0]
    assert copied == READINGS, f"the copy has {copied} of the {READINGS} rows"
    assert source_faults.vps.query("SELECT count(noise) FROM public.readings", dbname=TARGET)[0][0] == READINGS
    assert any(message.startswith("table public.readings was rewritten") and "taking another (1 of 3)" in message
               for message in run_log_messages(source_faults, result.run_id))


def test_a_table_dropped_after_the_snapshot_is_left_to_the_next_snapshot(source_faults: FaultEnv) -> None:
    watcher, dropper = rewrite_committed_after_the_export(source_faults, "DROP TABLE public.readings")
    with watcher, dropper:
        result = source_faults.run(TARGET)
    assert watcher.fired, "the run never exported its snapshot"
    assert result.success, step_errors(result)
    assert source_faults.vps.query("SELECT to_regclass('public.readings')", dbname=TARGET) == [(None,)]
    assert "table public.readings was dropped or renamed after the dump's snapshot was taken; taking another (1 of 3)" \
        in run_log_messages(source_faults, result.run_id)


def test_a_table_rewritten_after_every_snapshot_fails_the_dump(
        source_faults: FaultEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    before = source_faults.previous_good_copy(TARGET)
    monkeypatch.setattr(snapshot, "SNAPSHOT_ATTEMPTS", 1)
    watcher, rewriter = rewrite_committed_after_the_export(source_faults)
    with watcher, rewriter:
        result = source_faults.run(TARGET)
    assert watcher.fired, "the run never exported its snapshot"
    step, cause = step_failure(result)
    assert step == "dump_supabase_database", cause
    assert cause.startswith("table public.readings was rewritten (TRUNCATE, VACUUM FULL, CLUSTER or an ALTER TABLE "
                            "that rewrites) after the dump's snapshot was taken (attempts: 1;"), cause
    assert failure_category(result) == FailureCategory.SOURCE_CHANGED
    source_faults.assert_unchanged(TARGET, before)
    assert leftovers(source_faults.vps, TARGET, source_faults.env.backup_dir) == []


# --- locks other sessions hold or ask for --------------------------------------------------------

def test_a_session_holding_a_table_exclusively_fails_the_dump_naming_it(
        source_faults: FaultEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    before = source_faults.previous_good_copy(TARGET)
    monkeypatch.setenv("WEHUB_LOCK_TIMEOUT_SECONDS", "3")
    with app_session(source_faults) as holder:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE public.notes IN ACCESS EXCLUSIVE MODE")
        # Without a bound the run would wait for ever: the session gives up after a minute.
        with Watcher(lambda: False, lambda: holder.execute("ROLLBACK"), timeout=60, act_on_timeout=True):
            result = source_faults.run(TARGET)
        holder.execute("SELECT 1")  # the session was left alone
        step, cause = step_failure(result)
        assert step == "dump_supabase_database", cause
        assert cause.startswith(f"lock wait on table public.notes gave up after 3 s: session pid "
                                f"{holder.info.backend_pid} (application_name '{APP}', transaction open "), cause
        assert " query started 20" in cause and "holds ACCESS EXCLUSIVE on it" in cause, cause
        assert cause.endswith("raise WEHUB_LOCK_TIMEOUT_SECONDS"), cause
    assert failure_category(result) == FailureCategory.LOCK_CONFLICT
    source_faults.assert_unchanged(TARGET, before)
    assert leftovers(source_faults.vps, TARGET, source_faults.env.backup_dir) == []


def test_an_app_migration_holding_a_lock_the_dump_needs_finishes_and_so_does_the_run(
        source_faults: FaultEnv) -> None:
    """The three-party deadlock: the migration holds a lock pg_dump needs, then alters a table the
    run has read. Nothing of the run may be holding that table, or waiting for the migration, while
    the migration waits."""
    with app_session(source_faults) as app:
        app.execute("SET statement_timeout = '20s'")  # as an application's migration tool would
        app.execute("BEGIN")
        app.execute("ALTER TABLE ONLY public.events ALTER COLUMN note SET DEFAULT 'none'")
        migration = Statement(app, "ALTER TABLE public.notes ADD COLUMN flagged boolean", "COMMIT")
        stuck = steadily(lambda: snapshot_exported(source_faults.source) and run_sessions_idle(source_faults.source))
        with Watcher(stuck, migration, timeout=60, act_on_timeout=True) as watcher:
            result = source_faults.run(TARGET)
        assert migration.done.wait(30)
    assert watcher.fired, "the run never waited in its dump"
    assert migration.error is None, f"the application's migration failed: {migration.error}"
    assert result.success, step_errors(result)


def migration_asking_for_blobs(faults: FaultEnv, moment: Callable[[], bool], what: str
                               ) -> tuple[dg.ExecuteInProcessResult, int, float]:
    """A run while the application's migration (``statement_timeout`` 60 s) asks for ``public.blobs``
    at ``moment`` (``what`` in words): the run's result, the migration's pid and the run's seconds.
    The migration must go through."""
    with app_session(faults) as app:
        app.execute("SET statement_timeout = '60s'")
        migration = Statement(app, "ALTER TABLE public.blobs ADD COLUMN checked boolean")
        started = time.monotonic()
        with Watcher(moment, migration) as watcher:
            result = faults.run(TARGET)
        took = time.monotonic() - started
        assert migration.done.wait(30)
        pid = app.info.backend_pid
    assert watcher.fired, f"never: {what}"
    assert migration.error is None, f"the application's migration failed: {migration.error}"
    return result, pid, took


def assert_gave_way(result: dg.ExecuteInProcessResult, step: str, pid: int, who: str) -> None:
    """The run failed at ``step``, ``who`` (the dump, the copy) giving way to the migration ``pid``."""
    failed_step, cause = step_failure(result)
    assert failed_step == step, cause
    assert cause.startswith(f"lock conflict on table public.blobs: session pid {pid} (application_name '{APP}', "
                            "transaction open "), cause
    assert f"the {who} gave way" in cause, cause
    assert failure_category(result) == FailureCategory.LOCK_CONFLICT


def test_an_exclusive_lock_asked_for_while_the_dump_holds_the_table_fails_the_run_not_the_app(
        source_faults: FaultEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """The migration asks for a table after the run locked it, before pg_dump has: pg_dump would
    queue behind the migration, which waits for the run. The run gives way."""
    before = source_faults.previous_good_copy(TARGET)
    monkeypatch.setenv("WEHUB_LOCK_TIMEOUT_SECONDS", "5")
    source_faults.source_relay.bytes_per_second = PACED  # the blobs take two seconds to dump
    locked = lambda: snapshot_exported(source_faults.source) and run_holds(source_faults.source, "public.blobs")  # noqa: E731
    result, pid, _ = migration_asking_for_blobs(source_faults, locked, "the run locked the table")
    assert_gave_way(result, "dump_supabase_database", pid, "dump")
    source_faults.assert_unchanged(TARGET, before)


def test_an_exclusive_lock_asked_for_while_the_copy_holds_the_table_fails_the_run_not_the_app(
        source_faults: FaultEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream engine's copy: the migration asks for the table between two of its ranges, after the
    run's snapshot session locked it. The next range's reading would queue behind the migration, which
    waits for the run, until the relay's stall watchdog cut the run minutes later and blamed the network.
    The copy gives way within its short lock wait, naming the session, and the migration goes on."""
    before = source_faults.previous_good_copy(TARGET)
    source_faults.use_engine("stream")
    monkeypatch.setenv("WEHUB_LOCK_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("WEHUB_STALL_TIMEOUT_SECONDS", "120")
    monkeypatch.setenv("WEHUB_BACKUP_COPY_RANGE_MB", "1")  # blobs in four ranges, two at a time
    source_faults.source_relay.bytes_per_second = PACED / 8  # each range takes about three seconds
    copying = lambda: bool(run_sessions_copying(source_faults.source, "COPY (SELECT%blobs%"))  # noqa: E731
    result, pid, took = migration_asking_for_blobs(source_faults, copying, "the copy read the table")
    assert_gave_way(result, "restore_into_staging_database", pid, "copy")
    assert took < 60, f"the run waited {took:.0f} s behind the migration"
    source_faults.assert_unchanged(TARGET, before)
    assert leftovers(source_faults.vps, TARGET, source_faults.env.backup_dir) == []


def test_a_statement_timeout_of_the_source_login_does_not_cut_a_long_range(
        source_faults: FaultEnv, monkeypatch: pytest.MonkeyPatch, supabase_cluster: PostgresCluster) -> None:
    """Supabase gives ``postgres`` a statement_timeout of 2 minutes, and psql, unlike pg_dump, sets
    none of its own: a range that took longer to cross a slow link was cancelled, and copied again
    to the same end. The copy's readers clear it, as the project's other sessions do."""
    # (per login and database: it outranks the login's own setting, and goes with the database)
    supabase_cluster.execute(f"ALTER ROLE {APP_OWNER} IN DATABASE {LOCKS_SOURCE} SET statement_timeout = '1s'")
    # 19 MB in one range: more than the sockets between the source and the paced relay hold, so
    # the source's COPY lasts as long as the link takes
    supabase_cluster.execute("CREATE TABLE public.wide AS SELECT i, repeat(md5(i::text), 20) AS body "
                             "FROM generate_series(1, 30000) i", dbname=LOCKS_SOURCE, user=APP_OWNER)
    source_faults.use_engine("stream")
    source_faults.source_relay.bytes_per_second = PACED  # about six seconds
    result = source_faults.run(TARGET)
    assert result.success, step_errors(result)
    load = step_metadata(result, "restore_into_staging_database")
    assert load["copy_retries"] == 0 and float(load["copy_s"]) > 4, load


# --- a source that stops sending ----------------------------------------------------------------

def test_a_source_that_stops_sending_fails_the_dump_after_the_stall_timeout(
        source_faults: FaultEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    before = source_faults.previous_good_copy(TARGET)
    monkeypatch.setenv("WEHUB_STALL_TIMEOUT_SECONDS", "3")
    relay = source_faults.source_relay
    relay.bytes_per_second = PACED  # the dump lasts long enough to stop the source inside it
    before_run = relay.counters.received_from_server
    streaming = lambda: relay.counters.received_from_server - before_run >= MiB  # noqa: E731
    started = time.monotonic()
    with Watcher(streaming, lambda: relay.stop_forwarding(30)) as watcher:
        result = source_faults.run(TARGET)
    assert time.monotonic() - started < 25, "the dump waited for the source to send again"
    relay.forwarding.set()
    assert watcher.fired, "the source never stopped"
    step, cause = step_failure(result)
    assert step == "dump_supabase_database", cause
    assert cause.startswith("no data from the source for 3 s on an open connection"), cause
    assert failure_category(result) == FailureCategory.NETWORK
    source_faults.assert_unchanged(TARGET, before)
    assert leftovers(source_faults.vps, TARGET, source_faults.env.backup_dir) == []


def test_a_session_the_relay_lets_rest_may_idle_but_not_go_unanswered(
        backup_env: BackupEnv, supabase_cluster: PostgresCluster, tmp_path: Path) -> None:
    """The held snapshot's session idles between the dump and the copy: that is no stall. A statement
    of its own that the source leaves unanswered is one."""
    with FaultRelay(supabase_cluster.port) as source:
        passfile = write_private_passfile(tmp_path / "fault.pgpass", [
            PassEntry(LOOPBACK, str(source.port), "*", APP_OWNER, backup_env.supabase_password)])
        info = ConnectionInfo(LOOPBACK, source.port, APP_OWNER, "postgres", "disable", passfile)
        with relayed_connection(info, stall_timeout=1.0) as (relayed, relay), relayed.connect() as session:
            relay.let_rest(session)
            time.sleep(2.5)
            assert session.execute("SELECT 1").fetchone() == (1,) and relay.stalled_for is None
            source.stop_forwarding(10)
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError):
                session.execute("SELECT 1")
            assert relay.stalled_for == 1.0 and time.monotonic() - started < 5


def test_the_relay_reaches_a_server_by_its_socket_directory(supabase_cluster: PostgresCluster, tmp_path: Path) -> None:
    """A source configured by its socket directory (LOCAL_DB_HOST=/var/run/postgresql) is relayed too;
    the socket's trust login ignores the password."""
    passfile = write_private_passfile(tmp_path / "any.pgpass", [PassEntry("*", "*", "*", "*", "unused")])
    info = ConnectionInfo(str(supabase_cluster.socket_dir), supabase_cluster.port, supabase_cluster.superuser,
                          "postgres", "disable", passfile)
    with relayed_connection(info) as (relayed, relay), relayed.connect() as conn:
        assert conn.execute("SELECT current_setting('port')::int").fetchone() == (supabase_cluster.port,)
    assert relay.counters.received_from_server > 0


@pytest.mark.parametrize("variable", ["WEHUB_LOCK_TIMEOUT_SECONDS", "WEHUB_STALL_TIMEOUT_SECONDS"])
def test_a_timeout_of_zero_is_refused_before_anything_changes(
        backup_env: BackupEnv, instance: dg.DagsterInstance, vps_cluster: PostgresCluster,
        monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    """PostgreSQL takes a lock_timeout of 0 for "wait for ever"."""
    monkeypatch.setenv(variable, "0")
    result = run_backup("wehub_zero_timeout", instance)
    step, cause = step_failure(result)
    assert step == "plan_supabase_backup"
    assert cause == f"{variable} must be at least 1 second, not 0"
    assert failure_category(result) == FailureCategory.CONFIG
    assert databases_named(vps_cluster, "wehub_zero_timeout") == set()
