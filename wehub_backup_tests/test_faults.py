"""Faults during a backup or a migration: the previous good copy (or Supabase) survives,
nothing is left behind after the next run, and the run is reported failed with its cause.

Runs reach their servers through relays (``faults/relay.py``) that can slow the wire, so that
a phase lasts long enough to be interrupted at a chosen moment, or cut it. Kills hit a real
``wehub-backup`` process group with SIGKILL, so nothing in the run can clean up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from wehub_backup.backup.extract import extract_supabase
from wehub_backup.backup.plan import BackupPlan, plan_backup
from wehub_backup.defs.egress import egress_usage, recorded_egress
from wehub_backup.defs.names import BACKUP_JOB, MIGRATION_JOB
from wehub_backup.defs.resources import AlertSettings, backup_workspace_from_env
from wehub_backup.pg.connection import APPLICATION_NAME, ConnectionInfo
from wehub_backup.pg.databases import Blocker, find_blockers
from wehub_backup.pg.passfile import PassEntry, write_private_passfile
from wehub_backup.pg.relay import PROGRESS_SECONDS
from wehub_backup.procfs import live_group_members
from wehub_backup.run.locks import lock_name
from wehub_backup.run.targets import previous_name, retired_name, staging_name
from wehub_backup.supabase.schemas import DEFAULT_EXCLUDED_SCHEMAS, DEFAULT_EXCLUDED_TABLES
from wehub_backup_tests.faults.clients import ReconnectingPool
from wehub_backup_tests.faults.evidence import (
    STREAM_READS,
    STREAM_WRITES,
    DatabaseState,
    database_oids,
    database_state,
    leftovers,
    recorded_step_failure,
    run_sessions_copying,
    shared_dagster_instance,
    step_failure,
    wait_for_run_sessions_to_end,
)
from wehub_backup_tests.faults.process import (
    BackgroundRun,
    Watcher,
    command_line,
    descendants,
    interrupt_this_process,
    live_processes,
    stopped_pid,
)
from wehub_backup_tests.faults.relay import FaultRelay
from wehub_backup_tests.faults.secrets import files_with_secrets
from wehub_backup_tests.faults.sources import NOTES_SQL, blobs_sql, recreate_source
from wehub_backup_tests.harness.cluster import LOOPBACK, PostgresCluster, find_local_bindir
from wehub_backup_tests.harness.supabase_like import APP_OWNER, new_supabase_like_cluster, prepare_supabase_like
from wehub_backup_tests.support.backup_runs import alert_on_failed_run, run_backup, step_errors
from wehub_backup_tests.support.environment import (
    VPS_SUPERUSER,
    BackupEnv,
    SessionPasswords,
    start_for_session,
    start_vps_cluster,
)
from wehub_backup_tests.support.filesystems import tmpfs_on
from wehub_backup_tests.support.loopback_servers import running_webhook_receiver
from wehub_backup_tests.support.polling import wait_until
from wehub_backup_tests.support.supabase_target import catalog_snapshot, new_project_fixture, run_migration

FAULT_SOURCE = "faults_source"
TARGET = "wehub_faults"
BLOB_ROWS, BLOB_BYTES = 3000, 1024
# What the blobs cost on the wire as COPY text (hex): about 6 MB, so at the paced rate a dump
# or a restore takes about two seconds, long enough to pick a moment inside it.
COPY_BYTES = BLOB_ROWS * BLOB_BYTES * 2
PACED = 3 * 2**20
DUMPING, RESTORING = "pg_dump --format=directory", "pg_restore "
RECEIVED, SENT = "received_from_server", "sent_to_server"  # the relay's counters: from and to its server
MiB = 2**20
VPS_APP_OWNER = "wehub_app"


@pytest.fixture(scope="module")
def fault_source(supabase_cluster: PostgresCluster) -> Iterator[str]:
    """A source database of its own, owned by the app's login, that tests may write to."""
    yield recreate_source(supabase_cluster, FAULT_SOURCE, NOTES_SQL + blobs_sql(BLOB_ROWS, BLOB_BYTES))
    supabase_cluster.drop_database(FAULT_SOURCE)


@dataclass
class FaultEnv:
    """A backup environment whose connections pass relays the test controls."""

    env: BackupEnv
    source: PostgresCluster
    vps: PostgresCluster
    instance: dg.DagsterInstance
    passwords: SessionPasswords
    monkeypatch: pytest.MonkeyPatch
    work_dir: Path
    relays: list[FaultRelay] = field(default_factory=list)
    background_runs: list[BackgroundRun] = field(default_factory=list)
    source_relay: FaultRelay = field(init=False)
    vps_relay: FaultRelay = field(init=False)
    _logins: list[PassEntry] = field(default_factory=list)

    def route_source(self, cluster: PostgresCluster, dbname: str) -> None:
        """Runs read ``dbname`` on ``cluster`` through a new relay."""
        self.source, self.source_relay = cluster, self._relay(cluster, APP_OWNER, self.passwords.supabase_postgres)
        self.monkeypatch.setenv("SUPABASE_DB_HOST", LOOPBACK)
        self.monkeypatch.setenv("SUPABASE_DB_PORT", str(self.source_relay.port))
        self.monkeypatch.setenv("SUPABASE_DB_NAME", dbname)

    def route_vps(self, cluster: PostgresCluster) -> None:
        """Runs write to ``cluster`` through a new relay."""
        self.vps, self.vps_relay = cluster, self._relay(cluster, VPS_SUPERUSER, self.passwords.vps_postgres)
        self.monkeypatch.setenv("LOCAL_DB_HOST", LOOPBACK)
        self.monkeypatch.setenv("LOCAL_DB_PORT", str(self.vps_relay.port))

    def _relay(self, cluster: PostgresCluster, user: str, password: str) -> FaultRelay:
        relay = FaultRelay(cluster.port).__enter__()
        self.relays.append(relay)
        self.add_login(relay, user, password)
        return relay

    def add_login(self, relay: FaultRelay, user: str, password: str) -> None:
        """Runs find a password for ``user`` through ``relay``."""
        self._logins.append(PassEntry(LOOPBACK, str(relay.port), "*", user, password))
        passfile = write_private_passfile(self.work_dir / "relays.pgpass", self._logins)
        self.monkeypatch.setenv("PGPASSFILE", str(passfile))

    def connection(self, relay: FaultRelay, user: str, dbname: str) -> ConnectionInfo:
        """How a run reaches a server through ``relay``, for calling a step's function directly."""
        return ConnectionInfo(LOOPBACK, relay.port, user, dbname, "disable", Path(os.environ["PGPASSFILE"]))

    def dump_plan(self) -> tuple[BackupPlan, ConnectionInfo]:
        """A real backup plan with two pg_dump workers, and the source connection it dumps from."""
        source = self.connection(self.source_relay, APP_OWNER, os.environ["SUPABASE_DB_NAME"])
        workdir = self.work_dir / "run"
        workdir.mkdir()
        plan = plan_backup(TARGET, source, self.connection(self.vps_relay, VPS_SUPERUSER, "postgres"), workdir,
                           secrets_dir=workdir, excluded_schemas=list(DEFAULT_EXCLUDED_SCHEMAS),
                           excluded_tables=list(DEFAULT_EXCLUDED_TABLES), extra_bindirs=[], jobs=2)
        return plan, source

    def start_in_background(self, arguments: list[str]) -> BackgroundRun:
        """``wehub-backup ARGUMENTS`` in a process of its own (killed at teardown if still running)."""
        run = BackgroundRun(arguments, self.work_dir)
        self.background_runs.append(run)
        return run

    def full_speed(self) -> None:
        self.source_relay.bytes_per_second = self.vps_relay.bytes_per_second = None

    def use_engine(self, engine: str) -> None:
        """The copy engine of the runs from here on (in process and in the background)."""
        self.monkeypatch.setenv("WEHUB_BACKUP_COPY_ENGINE", engine)

    def copying(self, engine: str, cluster: PostgresCluster, statement_like: str) -> Callable[[], bool]:
        """The moment a fault waits for besides its bytes: any for the archive engine, whose programs
        read or write throughout; for the stream engine, a copy statement of the run's on ``cluster``."""
        if engine == "archive":
            return lambda: True
        return lambda: bool(run_sessions_copying(cluster, statement_like))

    def run(self, target: str = TARGET, **promote: object) -> dg.ExecuteInProcessResult:
        return run_backup(target, self.instance, **promote)

    def previous_good_copy(self, target: str = TARGET) -> DatabaseState:
        """The target as a fault finds it: made by a successful run if it does not exist yet."""
        if database_state(self.vps, target) is None:
            self.full_speed()
            result = self.run(target)
            assert result.success, step_errors(result)
        state = database_state(self.vps, target)
        assert state is not None
        return state

    def two_generations(self, target: str = TARGET) -> tuple[DatabaseState, DatabaseState]:
        """The target and its ``__previous``, as a fault finds them: made by successful runs if missing."""
        self.previous_good_copy(target)
        if database_state(self.vps, previous_name(target)) is None:
            self.recover(target, self.mark_source("a second generation"))
        current, previous = database_state(self.vps, target), database_state(self.vps, previous_name(target))
        assert current is not None and previous is not None
        return current, previous

    def mark_source(self, text: str) -> str:
        """A row only a copy made after this moment has."""
        return mark(self.source, os.environ["SUPABASE_DB_NAME"], APP_OWNER, text)

    def has_mark(self, target: str, text: str) -> bool:
        return self.vps.query("SELECT count(*) FROM public.notes WHERE body = %s", (text,), dbname=target)[0][0] > 0

    def started_runs(self, job: str = BACKUP_JOB) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(dg.RunsFilter(job_name=job, statuses=[dg.DagsterRunStatus.STARTED])))

    def latest_run(self, job: str = BACKUP_JOB) -> dg.DagsterRun:
        [run] = self.instance.get_runs(dg.RunsFilter(job_name=job), limit=1)
        return run

    def assert_unchanged(self, target: str, before: DatabaseState) -> None:
        wait_for_run_sessions_to_end(self.vps)
        assert database_state(self.vps, target) == before, "the previous good copy changed"

    def interrupted_run(self, relay: FaultRelay, pace: float, direction: str, after_bytes: float,
                        fault: Callable[[], object], run: Callable[[], dg.ExecuteInProcessResult],
                        *, once: Callable[[], bool] = lambda: True) -> tuple[str | None, str]:
        """Run with ``relay`` at ``pace``; inject ``fault`` once ``after_bytes`` have crossed it in
        ``direction`` (a counter of the relay) and ``once`` holds. The failed step, and its cause:
        asserted one line."""
        relay.bytes_per_second = pace
        start = getattr(relay.counters, direction)
        with Watcher(lambda: getattr(relay.counters, direction) - start >= after_bytes and once(), fault) as watcher:
            result = run()
        assert watcher.fired, "the fault was never injected"
        step, cause = step_failure(result)
        assert cause and "\n" not in cause, cause
        return step, cause

    def recover(self, target: str, mark: str) -> dg.ExecuteInProcessResult:
        """The next run succeeds, copies the source as it is now and leaves nothing behind."""
        self.full_speed()
        result = self.run(target)
        assert result.success, step_errors(result)
        assert self.has_mark(target, mark)
        assert leftovers(self.vps, target, self.env.backup_dir) == []
        return result


@pytest.fixture(scope="module")
def fault_dagster_home(session_passwords: SessionPasswords) -> Iterator[tuple[Path, dg.DagsterInstance]]:
    with shared_dagster_instance() as (home, instance):
        yield home, instance
        assert files_with_secrets([home], [session_passwords.supabase_postgres, session_passwords.vps_postgres]) == []


def mark(cluster: PostgresCluster, dbname: str, user: str, text: str) -> str:
    cluster.query("INSERT INTO public.notes (body) VALUES (%s) RETURNING id", (text,), dbname=dbname, user=user)
    return text


@pytest.fixture
def faults(backup_env: BackupEnv, fault_source: str, fault_dagster_home: tuple[Path, dg.DagsterInstance],
           supabase_cluster: PostgresCluster, vps_cluster: PostgresCluster, session_passwords: SessionPasswords,
           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FaultEnv]:
    home, instance = fault_dagster_home
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    fault_env = FaultEnv(backup_env, supabase_cluster, vps_cluster, instance, session_passwords, monkeypatch, tmp_path)
    fault_env.route_source(supabase_cluster, fault_source)
    fault_env.route_vps(vps_cluster)
    try:
        yield fault_env
    finally:
        for run in fault_env.background_runs:
            run.kill()
        for relay in fault_env.relays:
            relay.close()


def last_log_line(faults: FaultEnv) -> str:
    return faults.env.backup_log.read_text().splitlines()[-1]


# --- SIGKILL of the run's process group --------------------------------------------------------

@dataclass
class KillMoment:
    """A moment inside a run, judged from the relays' byte counts and the run's processes."""

    paced: str  # which relay to slow down: "source" (the dump) or "vps" (the restore)
    command: str
    fraction: float

    def reached(self, faults: FaultEnv, run: BackgroundRun, start: tuple[int, int]) -> bool:
        moved = (faults.source_relay.counters.received_from_server - start[0] if self.paced == "source"
                 else faults.vps_relay.counters.sent_to_server - start[1])
        return moved >= self.fraction * COPY_BYTES and run.running(self.command)


KILL_MOMENTS = {
    "dump-start": KillMoment("source", DUMPING, 0.0),
    "dump-third": KillMoment("source", DUMPING, 0.33),
    "dump-most": KillMoment("source", DUMPING, 0.8),
    "restore-start": KillMoment("vps", RESTORING, 0.0),
    "restore-half": KillMoment("vps", RESTORING, 0.5),
    "restore-most": KillMoment("vps", RESTORING, 0.85),
}


def start_paced_run(faults: FaultEnv, paced: str) -> tuple[BackgroundRun, tuple[int, int]]:
    (faults.source_relay if paced == "source" else faults.vps_relay).bytes_per_second = PACED
    start = (faults.source_relay.counters.received_from_server, faults.vps_relay.counters.sent_to_server)
    return faults.start_in_background(["backup", TARGET]), start


def assert_killed_run_reported_by_next(faults: FaultEnv, killed: dg.DagsterRun) -> None:
    """A killed process reports nothing; the next run marks it failed and logs why, and the
    failure sensor turns that into an alert."""
    record = faults.instance.get_run_by_id(killed.run_id)
    assert record is not None and record.status == dg.DagsterRunStatus.FAILURE
    [failure] = faults.instance.all_logs(killed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "its process died" in failure.message
    assert f"FAILURE target={TARGET} run={killed.run_id} cause=its process died" in faults.env.backup_log.read_text()
    assert not faults.started_runs()
    with running_webhook_receiver() as receiver:
        alert_on_failed_run(faults.instance, record, failure.dagster_event, AlertSettings(webhook_url=receiver.url))
    [alert] = receiver.payloads
    assert f"Target: {TARGET}" in alert["text"] and "its process died" in alert["text"], alert["text"]


def programs_of(pids: list[int], command: str) -> list[int]:
    """Those of ``pids`` whose argument list holds ``command`` (a program and its workers)."""
    return [pid for pid in pids if command in command_line(pid)]


# Each phase at its start and near its end; the moments in between are the other kill and signal tests'.
@pytest.mark.parametrize("moment_name", ["dump-start", "dump-most", "restore-start", "restore-most"])
def test_sigkill_during_dump_or_restore(faults: FaultEnv, moment_name: str) -> None:
    moment = KILL_MOMENTS[moment_name]
    before = faults.previous_good_copy()
    mark = faults.mark_source(f"not in the copy before {moment_name}")
    run, start = start_paced_run(faults, moment.paced)

    run.wait_until(lambda: moment.reached(faults, run, start), f"the {moment_name} moment")
    programs = programs_of(descendants(run.process.pid), moment.command)
    run.kill()
    # A program that outlived its run would stream on, here at a crawl (what it had sent goes on after).
    faults.source_relay.bytes_per_second = faults.vps_relay.bytes_per_second = PACED / 64
    wait_until(lambda: not set(programs) & set(live_processes()), f"the killed run's {moment.command.strip()} "
               "and its workers to end", 20)
    faults.full_speed()

    faults.assert_unchanged(TARGET, before)
    killed = faults.started_runs()
    assert len(killed) == 1, "a killed run cannot report itself: it stays STARTED"
    faults.recover(TARGET, mark)
    assert_killed_run_reported_by_next(faults, killed[0])


def _promote_waiting(vps: PostgresCluster) -> bool:
    """The run is in its promote step, polling for the sessions on the swap's databases to leave."""
    return vps.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                     " AND query LIKE '%%pg_stat_activity WHERE datname%%'", (APPLICATION_NAME,))[0][0] > 0


def _swap_waiting_for_a_lock(vps: PostgresCluster) -> bool:
    """The run is inside the swap transaction, one of its statements waiting for a lock."""
    return vps.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active'"
                     " AND wait_event_type = 'Lock' AND (query LIKE 'ALTER DATABASE%%RENAME%%'"
                     " OR query LIKE 'COMMENT ON DATABASE%%')", (APPLICATION_NAME,))[0][0] > 0


def _staging_marked(vps: PostgresCluster) -> bool:
    """The run has created its staging database and marked it (the mark's write is done)."""
    return vps.query("SELECT count(*) FROM pg_database WHERE datname = %s"
                     " AND shobj_description(oid, 'pg_database') IS NOT NULL", (staging_name(TARGET),))[0][0] > 0


@contextmanager
def _marks_held(vps: PostgresCluster) -> Iterator[None]:
    """A transaction that keeps database comments from being written: a swap's renames go
    through, and its last statement, the new copy's mark, waits."""
    with vps.connect() as holder:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE pg_catalog.pg_shdescription IN SHARE MODE")
        yield
        holder.execute("ROLLBACK")


def test_sigkill_while_promote_waits_for_the_applications_session(faults: FaultEnv) -> None:
    before = faults.previous_good_copy()
    mark = faults.mark_source("not in the copy before promote-waiting")
    with faults.vps.connect(TARGET) as application:
        run, _ = start_paced_run(faults, "none")
        run.wait_until(lambda: _promote_waiting(faults.vps), "the promote step waiting for sessions")
        run.kill()
        application.execute("SELECT 1")
    faults.assert_unchanged(TARGET, before)
    killed = faults.started_runs()
    faults.recover(TARGET, mark)
    assert_killed_run_reported_by_next(faults, killed[0])


def test_sigkill_inside_the_swap_transaction(faults: FaultEnv) -> None:
    """The process dies inside the swap transaction, all three renames done and uncommitted: a
    transaction holding the catalog of database comments keeps the swap's last statement (the
    new copy's mark) waiting."""
    before, previous = faults.two_generations()
    mark = faults.mark_source("not in the copy before promote-renaming")
    run, _ = start_paced_run(faults, "vps")
    run.wait_until(lambda: run.running(RESTORING) and _staging_marked(faults.vps), "the restore into a fresh staging database")
    with _marks_held(faults.vps):
        run.wait_until(lambda: _swap_waiting_for_a_lock(faults.vps), "the swap transaction, its renames done")
        run.kill()
    faults.assert_unchanged(TARGET, before)
    assert database_state(faults.vps, previous_name(TARGET)) == previous
    assert retired_name(TARGET) not in database_oids(faults.vps)
    killed = faults.started_runs()
    faults.recover(TARGET, mark)
    assert_killed_run_reported_by_next(faults, killed[0])


# --- a step that ends while its program runs ----------------------------------------------------

def dump_sessions(cluster: PostgresCluster) -> int:
    return cluster.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND query LIKE 'COPY %%'",
                         (APPLICATION_NAME,), dbname=FAULT_SOURCE)[0][0]


def test_an_interrupt_during_the_dump_stops_pg_dump_and_its_workers(faults: FaultEnv) -> None:
    """KeyboardInterrupt in the main thread, which fingerprints the snapshot while pg_dump's two
    workers stream from it in another thread."""
    plan, source = faults.dump_plan()
    faults.source_relay.bytes_per_second = PACED / 8
    start, seen = faults.source_relay.counters.received_from_server, []

    def streaming() -> bool:
        seen[:] = programs_of(descendants(os.getpid()), "pg_dump --format=directory")
        return len(seen) == 3 and faults.source_relay.counters.received_from_server - start > MiB / 2

    logged: list[str] = []
    with Watcher(streaming, interrupt_this_process) as watcher, pytest.raises(KeyboardInterrupt) as raised:
        extract_supabase(plan, source, logged.append)
    assert watcher.fired
    pid = stopped_pid(raised.value.__notes__, "pg_dump")
    assert pid in seen and not set(seen) & set(live_processes()), "pg_dump or a worker outlived the step"
    assert live_group_members(pid) == []
    assert f"stopped pg_dump (pid {pid}) and its process group: the step was interrupted (KeyboardInterrupt)" in logged
    wait_until(lambda: dump_sessions(faults.source) == 0, "the stopped dump's COPY queries to end", 10)


def test_an_interrupted_run_stops_its_pg_restore(faults: FaultEnv) -> None:
    """SIGINT to the process that runs the job in process, as Dagster's termination of a run sends
    it: Dagster raises DagsterExecutionInterruptedError in the step, and pg_restore stops with it."""
    faults.previous_good_copy()
    faults.vps_relay.bytes_per_second = PACED / 8
    start, seen = faults.vps_relay.counters.sent_to_server, []

    def restoring() -> bool:
        seen[:] = programs_of(descendants(os.getpid()), RESTORING)
        return len(seen) == 3 and faults.vps_relay.counters.sent_to_server - start > MiB / 2

    with Watcher(restoring, interrupt_this_process) as watcher:
        result = faults.run()
    assert watcher.fired and not result.success
    assert not set(seen) & set(live_processes()), "pg_restore or a worker outlived its step"
    messages = [record.user_message for record in faults.instance.all_logs(result.run_id)]
    [stopped] = [message for message in messages if "stopped pg_restore (pid" in message]
    assert stopped.endswith("and its process group: the step was interrupted (RunInterrupted)")
    faults.full_speed()


def on_memory_file_system(path: Path) -> bool:
    """Whether ``path`` lies on a tmpfs (memory only, emptied at boot), from the mount table."""
    mounts = [line.split()[1:3] for line in Path("/proc/self/mounts").read_text().splitlines()]
    resolved = str(path.resolve())
    point, kind = max(((point, kind) for point, kind in mounts
                       if resolved == point or resolved.startswith(point.rstrip("/") + "/")), key=lambda m: len(m[0]))
    return kind == "tmpfs"


def run_secrets_dir(run_id: str) -> Path:
    return backup_workspace_from_env().process_config_and_initialize().runtime_root() / f"run-{run_id}"


@pytest.mark.parametrize("moment_name", ["dump-most", "restore-half"])
def test_sigkill_leaves_no_password_on_disk_and_the_next_run_records_its_egress(
        faults: FaultEnv, moment_name: str) -> None:
    moment = KILL_MOMENTS[moment_name]
    faults.previous_good_copy()
    run, start = start_paced_run(faults, moment.paced)
    run.wait_until(lambda: moment.reached(faults, run, start), f"the {moment_name} moment")
    run.kill()
    received = faults.source_relay.counters.received_from_server - start[0]
    [killed] = faults.started_runs()

    # The password files the killed run's pg_dump/pg_restore read are on a memory file system,
    # not in the working directory on disk.
    assert files_with_secrets([faults.env.backup_dir], faults.env.passwords, password_files_too=True) == []
    secrets = run_secrets_dir(killed.run_id)
    assert secrets.is_dir() and on_memory_file_system(secrets)
    faults.recover(TARGET, faults.mark_source(f"after the kill at {moment_name}"))
    assert not secrets.exists(), "the next run did not sweep the killed run's password files"

    recorded = [egress_bytes for egress_bytes, _ in recorded_egress(faults.instance, killed.run_id)]
    if moment.paced == "source":
        # What the relay had counted when the process died (written every quarter second).
        [counted] = recorded
        assert received - PACED * 2 * PROGRESS_SECONDS <= counted <= received, (counted, received)
        assert killed.run_id in {run.run_id for run in egress_usage(faults.instance).runs}
    else:
        [dump_step] = recorded  # the dump recorded its egress itself; the next run added nothing
        assert dump_step >= COPY_BYTES


def start_mid_stream_copy(faults: FaultEnv) -> tuple[BackgroundRun, tuple[int, int]]:
    """A paced stream engine run, once it is in the middle of its copy."""
    faults.use_engine("stream")
    run, start = start_paced_run(faults, "source")
    # The blobs travel in binary, about half of COPY_BYTES, after the dump's 0.7 MB: 40% of it is mid-copy.
    run.wait_until(lambda: faults.source_relay.counters.received_from_server - start[0] >= 0.4 * COPY_BYTES
                   and run.running("TO STDOUT"), "the middle of the stream copy")
    return run, start


def test_sigkill_during_the_stream_copy_records_the_copys_egress_too(faults: FaultEnv) -> None:
    """The dump step recorded its own bytes; the copy's crossed the same relay, and the next run
    records what the relay had counted beyond them."""
    faults.previous_good_copy()
    run, start = start_mid_stream_copy(faults)
    run.kill()
    received = faults.source_relay.counters.received_from_server - start[0]
    [killed] = faults.started_runs()
    faults.recover(TARGET, faults.mark_source("after the kill mid-copy"))

    dump_step, copy_until_killed = [egress_bytes for egress_bytes, _ in recorded_egress(faults.instance, killed.run_id)]
    # What the relay had counted when the process died (written every quarter second).
    assert received - PACED * 2 * PROGRESS_SECONDS <= dump_step + copy_until_killed <= received, \
        (dump_step, copy_until_killed, received)
    assert killed.run_id in {run.run_id for run in egress_usage(faults.instance).runs}


# --- SIGINT and SIGTERM: an interrupted run cleans up like a failed one -------------------------

@pytest.mark.parametrize(("moment_name", "signum"), [("dump-third", signal.SIGINT), ("restore-half", signal.SIGTERM)],
                         ids=["dump-third-SIGINT", "restore-half-SIGTERM"])
def test_interrupted_run_fails_cleans_up_and_counts_its_egress(faults: FaultEnv, moment_name: str,
                                                                signum: int) -> None:
    """The signal goes to the run's whole process group, as Ctrl-C in a terminal and
    ``systemctl stop`` or ``restart`` (KillMode=control-group) send it. Both signals take the same
    path (a run interrupted in any step), so each is sent in one phase."""
    moment, name = KILL_MOMENTS[moment_name], signal.Signals(signum).name
    before = faults.previous_good_copy()
    run, start = start_paced_run(faults, moment.paced)
    run.wait_until(lambda: moment.reached(faults, run, start), f"the {moment_name} moment")
    os.killpg(run.process.pid, signum)
    assert run.process.wait(timeout=120) == 1, run.text()

    interrupted = faults.latest_run()
    assert interrupted.status == dg.DagsterRunStatus.FAILURE
    step, cause = recorded_step_failure(faults.instance, interrupted.run_id)
    assert cause == f"interrupted by {name}", cause
    assert f"cause: interrupted by {name}" in run.text()
    assert f"FAILURE target={TARGET} step={step} cause=interrupted by {name}" in last_log_line(faults)
    faults.assert_unchanged(TARGET, before)
    assert leftovers(faults.vps, TARGET, faults.env.backup_dir) == []
    assert not run_secrets_dir(interrupted.run_id).exists()
    [egress_bytes] = [found for found, _ in recorded_egress(faults.instance, interrupted.run_id)]
    assert egress_bytes > 0 if moment.paced == "source" else egress_bytes >= COPY_BYTES
    faults.recover(TARGET, faults.mark_source(f"after {name} at {moment_name}"))


def test_interrupting_the_stream_copy_records_the_copys_egress(faults: FaultEnv) -> None:
    """The copy step fails on SIGINT like on any error, and its failure carries what the source
    had sent for the copy: the run's two steps add up to what crossed the relay."""
    before = faults.previous_good_copy()
    run, start = start_mid_stream_copy(faults)
    os.killpg(run.process.pid, signal.SIGINT)
    assert run.process.wait(timeout=120) == 1, run.text()
    received = faults.source_relay.counters.received_from_server - start[0]
    interrupted = faults.latest_run()
    assert recorded_step_failure(faults.instance, interrupted.run_id) == ("restore_into_staging_database",
                                                                           "interrupted by SIGINT")
    dump_step, copy_step = [egress_bytes for egress_bytes, _ in recorded_egress(faults.instance, interrupted.run_id)]
    assert copy_step > 0.3 * COPY_BYTES and dump_step + copy_step <= received, (dump_step, copy_step, received)
    faults.assert_unchanged(TARGET, before)
    faults.recover(TARGET, faults.mark_source("after SIGINT mid-copy"))


# --- the run's lock on the VPS ------------------------------------------------------------------

IDLE_LOGIN = "wehub_idle_login"


def lock_sessions(vps: PostgresCluster, target: str) -> list[int]:
    """Sessions holding a run's advisory lock on ``target``."""
    return [pid for (pid,) in vps.query(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)", (lock_name(target),))]


def test_run_lock_outlives_the_vps_logins_idle_session_timeout(faults: FaultEnv) -> None:
    faults.vps.execute(f"DO $$ BEGIN CREATE ROLE {IDLE_LOGIN} LOGIN SUPERUSER; EXCEPTION WHEN duplicate_object"
                       f" THEN NULL; END $$; ALTER ROLE {IDLE_LOGIN} SET idle_session_timeout = '2s'")
    faults.vps.set_password(IDLE_LOGIN, faults.passwords.vps_postgres)
    faults.add_login(faults.vps_relay, IDLE_LOGIN, faults.passwords.vps_postgres)
    faults.monkeypatch.setenv("LOCAL_DB_USER", IDLE_LOGIN)
    # The login's timeout does end an idle session of its own.
    with psycopg.connect(host=LOOPBACK, port=faults.vps.port, user=IDLE_LOGIN, dbname="postgres",
                         password=faults.passwords.vps_postgres, autocommit=True) as idle:
        pid = idle.info.backend_pid
        wait_until(lambda: not faults.vps.query("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)),
                   f"{IDLE_LOGIN}'s idle session to be ended", 30)
    faults.previous_good_copy()

    faults.source_relay.bytes_per_second = PACED / 4  # a dump of about eight seconds
    start = faults.source_relay.counters.received_from_server
    first = faults.start_in_background(["backup", TARGET])
    # Four seconds into the dump the first run's lock session has been idle twice the timeout.
    first.wait_until(lambda: faults.source_relay.counters.received_from_server - start >= 4 * PACED / 4
                     and first.running(DUMPING), "four seconds of the first run's dump")
    assert len(lock_sessions(faults.vps, TARGET)) == 1, "the first run's lock session was ended"
    second = faults.run()
    step, cause = step_failure(second)
    assert step == "plan_supabase_backup" and cause.startswith("another backup or migration run"), cause
    faults.full_speed()  # the first run has made its point: it may finish at once
    assert first.process.wait(timeout=120) == 0, first.text()


# Each engine's copy as the run's process list shows it (pg_dump, or a stream worker's psql), and its step.
COPYING = {"archive": (DUMPING, "dump_supabase_database"), "stream": ("TO STDOUT", "restore_into_staging_database")}


@pytest.mark.parametrize("engine", list(COPYING))
def test_vps_restart_mid_copy_fails_the_run_and_only_the_next_run_swaps(
        faults: FaultEnv, stoppable_vps: PostgresCluster, engine: str) -> None:
    target = f"wehub_faults_lock_restart_{engine}"
    faults.route_vps(stoppable_vps)
    before = faults.previous_good_copy(target)
    mark = faults.mark_source("copied by the run that started after the VPS restart")
    faults.use_engine(engine)
    faults.source_relay.bytes_per_second = PACED / 3  # a copy of about six seconds
    start = faults.source_relay.counters.received_from_server
    first = faults.start_in_background(["backup", target])
    first.wait_until(lambda: faults.source_relay.counters.received_from_server - start >= 0.2 * COPY_BYTES
                     and first.running(COPYING[engine][0]), "the first run's copy")
    stoppable_vps.restart()  # every VPS session ends, the first run's lock session with them

    faults.route_source(faults.source, FAULT_SOURCE)  # the second run reads at full speed
    second = faults.run(target)
    assert second.success, step_errors(second)
    assert first.process.wait(timeout=120) == 1, first.text()
    [failed] = [run for run in faults.instance.get_runs(dg.RunsFilter(job_name=BACKUP_JOB), limit=2)
                if run.run_id != second.run_id]
    step, cause = recorded_step_failure(faults.instance, failed.run_id)
    assert step == COPYING[engine][1], (step, cause)
    assert cause.startswith(f"lost the run's lock on {target}: its VPS session ended"), cause
    # One swap: the copy from before is the previous generation, the second run's copy the target.
    assert database_state(faults.vps, previous_name(target)) == before
    assert faults.has_mark(target, mark)
    assert leftovers(faults.vps, target, faults.env.backup_dir) == []


def test_promote_stops_when_the_lock_session_ends_while_it_waits(faults: FaultEnv) -> None:
    before = faults.previous_good_copy()
    application = faults.vps.connect(TARGET)

    def end_the_lock_session_then_leave() -> None:
        for pid in lock_sessions(faults.vps, TARGET):
            faults.vps.execute(f"SELECT pg_terminate_backend({pid}, 5000)")
        application.close()

    with Watcher(lambda: _promote_waiting(faults.vps), end_the_lock_session_then_leave) as watcher:
        result = faults.run(on_connected_sessions="wait", connected_sessions_timeout_seconds=60)
    assert watcher.fired
    step, cause = step_failure(result)
    assert step == "promote_staging_database", cause
    assert cause.startswith(f"lost the run's lock on {TARGET}: its VPS session ended"), cause
    faults.assert_unchanged(TARGET, before)
    # Without its lock the run leaves the staging copy alone: another run may own it by now.
    assert leftovers(faults.vps, TARGET, faults.env.backup_dir) == [staging_name(TARGET)]
    faults.recover(TARGET, faults.mark_source("after the lost lock"))


# --- servers and connections that go away -------------------------------------------------------

def test_source_drops_its_connections_mid_dump(faults: FaultEnv) -> None:
    before = faults.previous_good_copy()
    mark = faults.mark_source("not in the copy before the connection drop")
    step, cause = faults.interrupted_run(faults.source_relay, PACED, RECEIVED, MiB,
                                         faults.source_relay.cut_connections, faults.run)
    assert step == "dump_supabase_database"
    assert "server closed the connection unexpectedly" in cause, cause
    faults.assert_unchanged(TARGET, before)
    assert leftovers(faults.vps, TARGET, faults.env.backup_dir) == []
    assert f"FAILURE target={TARGET} step=dump_supabase_database" in last_log_line(faults)
    assert not faults.has_mark(TARGET, mark)


@pytest.fixture(scope="module")
def stoppable_source(pg_base_dir: Path, session_passwords: SessionPasswords) -> Iterator[PostgresCluster]:
    """A Supabase-like source of its own (small), which a test may stop."""
    cluster = new_supabase_like_cluster("faultsrc", pg_base_dir, find_local_bindir())
    prepare_supabase_like(start_for_session(cluster), session_passwords.supabase_postgres, large_rows=5000)
    cluster.execute(NOTES_SQL, user=APP_OWNER)
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module")
def stoppable_vps(pg_base_dir: Path, session_passwords: SessionPasswords) -> Iterator[PostgresCluster]:
    """A VPS server of its own, which a test may stop."""
    cluster = start_vps_cluster("faultvps", pg_base_dir, session_passwords.vps_postgres)
    yield cluster
    cluster.destroy()


# Where a server stopping mid-copy stops each engine, and how the cause may begin: the archive
# engine's dump reads the source and its restore writes the VPS; the stream engine's load step does
# both. A VPS that stops takes the run's lock session with it, and the lock's keepalive (every 2 s)
# may find that before pg_restore reports its own lost connection: either says the VPS went.
SOURCE_STOPS = {"archive": ("dump_supabase_database", ("pg_dump failed: ",)),
                "stream": ("restore_into_staging_database", ("the run's snapshot session on the source was lost",))}
TARGET_STOPS = {"archive": ("restore_into_staging_database", ("pg_restore failed: ", "lost the run's lock on ")),
                "stream": ("restore_into_staging_database", ("lost the run's lock on ",))}


@pytest.mark.parametrize("engine", list(SOURCE_STOPS))
def test_source_server_stops_mid_copy(faults: FaultEnv, stoppable_source: PostgresCluster, engine: str) -> None:
    target = f"wehub_faults_source_stop_{engine}"
    faults.route_source(stoppable_source, "postgres")
    before = faults.previous_good_copy(target)
    mark = faults.mark_source("not in the copy before the source stopped")
    faults.use_engine(engine)
    try:
        step, cause = faults.interrupted_run(faults.source_relay, MiB / 2, RECEIVED, MiB / 4,
                                             lambda: stoppable_source.stop("fast"), lambda: faults.run(target),
                                             once=faults.copying(engine, stoppable_source, STREAM_READS))
    finally:  # the module's other tests use the server
        stoppable_source.restart()
    assert step == SOURCE_STOPS[engine][0] and cause.startswith(SOURCE_STOPS[engine][1]), (step, cause)
    faults.assert_unchanged(target, before)
    assert leftovers(faults.vps, target, faults.env.backup_dir) == []
    faults.recover(target, mark)


@pytest.mark.parametrize("engine", list(TARGET_STOPS))
def test_target_server_stops_mid_copy(faults: FaultEnv, stoppable_vps: PostgresCluster, engine: str) -> None:
    target = f"wehub_faults_target_stop_{engine}"
    faults.route_vps(stoppable_vps)
    before = faults.previous_good_copy(target)
    mark = faults.mark_source("not in the copy before the VPS stopped")
    faults.use_engine(engine)
    try:
        step, cause = faults.interrupted_run(faults.vps_relay, PACED, SENT, 2 * MiB,
                                             lambda: stoppable_vps.stop("immediate"), lambda: faults.run(target),
                                             once=faults.copying(engine, stoppable_vps, STREAM_WRITES))
    finally:  # the module's other tests use the server
        stoppable_vps.restart()
    assert step == TARGET_STOPS[engine][0] and cause.startswith(TARGET_STOPS[engine][1]), (step, cause)
    faults.assert_unchanged(target, before)
    assert not list(faults.env.backup_dir.glob("run-*"))
    faults.recover(target, mark)


# --- a backup directory that fills up -----------------------------------------------------------

@pytest.fixture
def small_backup_filesystem(faults: FaultEnv) -> Iterator[Callable[[str], Path]]:
    """Mount a tmpfs of the given size on the run's backup directory (unmounted afterwards)."""
    with contextlib.ExitStack() as mounts:
        yield lambda size: mounts.enter_context(tmpfs_on(faults.env.backup_dir, size))


def test_backup_directory_too_small_is_refused_in_preflight(
    faults: FaultEnv, small_backup_filesystem: Callable[[str], Path]
) -> None:
    before = faults.previous_good_copy()
    small_backup_filesystem("2m")
    result = faults.run()
    step, cause = step_failure(result)
    assert step == "plan_supabase_backup"
    assert cause.startswith("not enough free space in ") and "MiB needed for the dump" in cause, cause
    faults.assert_unchanged(TARGET, before)
    assert leftovers(faults.vps, TARGET, faults.env.backup_dir) == []


def test_backup_directory_filling_up_mid_dump(faults: FaultEnv, small_backup_filesystem: Callable[[str], Path]) -> None:
    before = faults.previous_good_copy()
    mark = faults.mark_source("not in the copy before the disk filled up")
    directory = small_backup_filesystem("96m")
    filler = directory / "filler"

    def fill_up() -> None:
        """Take all but 256 KiB of the free space. pg_dump writes meanwhile, so an allocation
        sized a moment before can fail (and tmpfs gives its pages back): size it again, and retry."""
        fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            for _ in range(50):
                spare = shutil.disk_usage(directory).free - 256 * 1024
                if spare <= 0:
                    return
                try:
                    os.posix_fallocate(fd, os.fstat(fd).st_size, spare)
                    return
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
            raise AssertionError("the backup directory could not be filled up")
        finally:
            os.close(fd)

    step, cause = faults.interrupted_run(faults.source_relay, PACED, RECEIVED, MiB, fill_up, faults.run)
    assert step == "dump_supabase_database"
    assert "No space left on device" in cause, cause
    faults.assert_unchanged(TARGET, before)
    assert sorted(p.name for p in directory.iterdir()) == ["filler"], "the failed run's files were not removed"
    assert leftovers(faults.vps, TARGET, directory) == []
    assert not faults.has_mark(TARGET, mark)


# --- the application's sessions on the target at promote time ----------------------------------

def test_wait_mode_swaps_once_the_session_leaves(faults: FaultEnv) -> None:
    before = faults.previous_good_copy()
    mark = faults.mark_source("copied once the session left")
    application = faults.vps.connect(TARGET)
    with Watcher(lambda: _promote_waiting(faults.vps), application.close) as left:
        result = faults.run(on_connected_sessions="wait", connected_sessions_timeout_seconds=60)
    assert left.fired
    assert result.success, step_errors(result)
    promoted = result.output_for_node("promote_staging_database")
    assert promoted.waited_seconds > 0 and promoted.sessions_terminated == 0
    assert faults.has_mark(TARGET, mark)
    assert database_state(faults.vps, previous_name(TARGET)) == before


WAIT_ADVICE = "(end those sessions, or set on_connected_sessions: terminate)"
NOT_SWAPPED = "the verified copy was not swapped in and no database was renamed or dropped"
Expectation = Callable[[], str]


@contextmanager
def _session_on(faults: FaultEnv, database: str) -> Iterator[Expectation]:
    """An application's or a GUI's session on ``database`` for the whole run; it is never ended."""
    with faults.vps.connect(database) as session:
        yield lambda: (f"database {database} still has 1 connected session(s) (pid {session.info.backend_pid} "
                       f"postgres@local) after 2s; {NOT_SWAPPED} {WAIT_ADVICE}")
        session.execute("SELECT 1")


@contextmanager
def _session_on_staging(faults: FaultEnv) -> Iterator[Expectation]:
    """A monitoring agent that connects to staging as soon as it appears (the failure hook drops
    staging, agent and all)."""
    staging, agents = staging_name(TARGET), []
    exists = lambda: staging in database_oids(faults.vps)  # noqa: E731
    with Watcher(exists, lambda: agents.append(faults.vps.connect(staging))) as watcher:
        yield lambda: (f"database {staging} still has 1 connected session(s) (pid {agents[0].info.backend_pid} "
                       f"postgres@local) after 2s; {NOT_SWAPPED} {WAIT_ADVICE}")
    assert watcher.fired
    agents[0].close()


@contextmanager
def _lock_on_the_target(faults: FaultEnv) -> Iterator[Expectation]:
    """A transaction, in another database, holding the target's lock: terminating sessions cannot end it."""
    with faults.vps.connect() as holder:
        holder.execute("BEGIN")
        holder.execute(f"COMMENT ON DATABASE {TARGET} IS 'being edited'")
        yield lambda: (f"database {TARGET} is locked by 1 other transaction(s) (pid {holder.info.backend_pid} "
                       f"holding ShareUpdateExclusiveLock) after 3s of terminating sessions; {NOT_SWAPPED}")
        holder.execute("ROLLBACK")


def _cleanup_waiting(vps: PostgresCluster) -> bool:
    """The failed run's cleanup is dropping staging, and waits for a lock to do it."""
    return vps.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'"
                     " AND query LIKE 'DROP DATABASE%%'", (APPLICATION_NAME,))[0][0] > 0


@contextmanager
def _marks_held_until_cleanup(faults: FaultEnv) -> Iterator[Watcher]:
    """``_marks_held`` from the moment the run has marked its staging database until the failed
    run's cleanup needs the catalog too (dropping staging removes its comment)."""
    with contextlib.ExitStack() as hold:
        take = Watcher(lambda: _staging_marked(faults.vps), lambda: hold.enter_context(_marks_held(faults.vps)))
        with take, Watcher(lambda: _cleanup_waiting(faults.vps), hold.close):
            yield take


@contextmanager
def _renames_done_then_stuck(faults: FaultEnv) -> Iterator[Expectation]:
    """All three renames done in the swap transaction, its last statement waiting past the timeout."""
    with _marks_held_until_cleanup(faults) as held:
        yield lambda: (f"the swap was held up (canceling statement due to lock timeout) after 2s; {NOT_SWAPPED} "
                       f"{WAIT_ADVICE}")
    assert held.fired


@contextmanager
def _swap_session_killed(faults: FaultEnv) -> Iterator[Expectation]:
    """The run's own session is ended (an operator's pg_terminate_backend) inside the swap transaction."""
    kill = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"
            " AND wait_event_type = 'Lock' AND query LIKE 'COMMENT ON DATABASE%%'")
    with (_marks_held_until_cleanup(faults),
          Watcher(lambda: _swap_waiting_for_a_lock(faults.vps),
                  lambda: faults.vps.query(kill, (APPLICATION_NAME,))) as killed):
        yield lambda: "terminating connection due to administrator command"
    assert killed.fired


PROMOTE_FAULTS: dict[str, tuple[str, int, Callable[[FaultEnv], contextlib.AbstractContextManager[Expectation]]]] = {
    "session on the target": ("wait", 2, lambda f: _session_on(f, TARGET)),
    "session on staging": ("wait", 2, _session_on_staging),
    "session on previous": ("wait", 2, lambda f: _session_on(f, previous_name(TARGET))),
    "lock on the target, terminate": ("terminate", 3, _lock_on_the_target),
    "renames done, then stuck": ("wait", 2, _renames_done_then_stuck),
    "swap session killed": ("wait", 60, _swap_session_killed),
}


@pytest.mark.parametrize("case", list(PROMOTE_FAULTS))
def test_failed_promote_keeps_both_generations(faults: FaultEnv, case: str) -> None:
    """Whatever makes the promote fail, the target and ``__previous`` are still there, as they were."""
    before, previous = faults.two_generations()
    policy, timeout, fault = PROMOTE_FAULTS[case]
    with fault(faults) as expectation:
        result = faults.run(on_connected_sessions=policy, connected_sessions_timeout_seconds=timeout)
        expected = expectation()
    step, cause = step_failure(result)
    assert step == "promote_staging_database", step_errors(result)
    assert expected in cause, cause
    assert "\n" not in cause
    assert ("on_connected_sessions: terminate" in cause) == (WAIT_ADVICE in expected), "advice for another mode"
    faults.assert_unchanged(TARGET, before)
    assert database_state(faults.vps, previous_name(TARGET)) == previous, "the older generation was lost"
    # The swap runs on the lock's session: ending it ends the lock, and a run that no longer holds the
    # lock leaves the (marked) staging copy to the next run, which may be one already working on it.
    kept = [staging_name(TARGET)] if case == "swap session killed" else []
    assert leftovers(faults.vps, TARGET, faults.env.backup_dir) == kept
    assert "step=promote_staging_database cause=" in last_log_line(faults)


def test_a_connection_still_starting_up_is_not_named_as_a_lock_holder(vps_cluster: PostgresCluster) -> None:
    """A backend starting up holds its database's lock before it is listed as a session (an
    autovacuum worker that waited behind a swap takes it the moment the swap gives up): the
    promote's check leaves it out, and still names a transaction that holds the database."""
    name = vps_cluster.fresh_database("wehub_starting_up")
    with vps_cluster.connect() as watcher, vps_cluster.connect() as holder, vps_cluster.connect() as editor:
        # Every new backend reads pg_db_role_setting while it starts, its database's lock taken.
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE pg_catalog.pg_db_role_setting IN ACCESS EXCLUSIVE MODE")
        arriving = threading.Thread(target=lambda: vps_cluster.query("SELECT 1", dbname=name), daemon=True)
        arriving.start()
        wait_until(lambda: _starting_up_on(watcher, name), "a backend starting up on the database", 8)
        assert find_blockers(watcher, [name], []) == []
        editor.execute("BEGIN")
        editor.execute(f"COMMENT ON DATABASE {name} IS 'being edited'")
        assert find_blockers(watcher, [name], []) == [
            Blocker(name, "lock", f"pid {editor.info.backend_pid} holding ShareUpdateExclusiveLock")]
        editor.execute("ROLLBACK")
        holder.execute("ROLLBACK")
        arriving.join(10)
    vps_cluster.drop_database(name)


def _starting_up_on(conn: psycopg.Connection, database: str) -> bool:
    """A backend holds ``database``'s lock and is not yet listed in pg_stat_activity."""
    return conn.execute("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.objid"
                        " WHERE l.locktype = 'object' AND l.classid = 'pg_database'::regclass AND l.granted"
                        " AND d.datname = %s AND l.pid NOT IN (SELECT pid FROM pg_stat_activity)",
                        (database,)).fetchone()[0] > 0


def test_terminate_mode_ends_the_sessions_and_swaps(faults: FaultEnv) -> None:
    faults.two_generations()
    mark = faults.mark_source("copied over terminated sessions")
    with faults.vps.connect(TARGET) as application, faults.vps.connect(previous_name(TARGET)) as reader:
        result = faults.run(on_connected_sessions="terminate", connected_sessions_timeout_seconds=30)
        for session in (application, reader):
            with pytest.raises(psycopg.OperationalError):
                session.execute("SELECT 1")
    assert result.success, step_errors(result)
    assert result.output_for_node("promote_staging_database").sessions_terminated == 2
    assert faults.has_mark(TARGET, mark)


def test_terminate_mode_swaps_while_the_application_reconnects(faults: FaultEnv) -> None:
    """An application pool that replaces every terminated session at once cannot hold the swap off."""
    faults.previous_good_copy()
    mark = faults.mark_source("copied while the pool reconnected")
    with ReconnectingPool(faults.vps, TARGET, size=4) as pool:
        wait_until(lambda: pool.connections >= 4, "the pool's sessions", 30)
        result = faults.run(on_connected_sessions="terminate", connected_sessions_timeout_seconds=30)
        assert result.success, step_errors(result)
        new_copy = database_oids(faults.vps)[TARGET]
        wait_until(lambda: new_copy in pool.oids_seen, "the pool to reconnect to the new copy", 30)
    assert result.output_for_node("promote_staging_database").sessions_terminated >= 4
    assert faults.has_mark(TARGET, mark)
    refusing = faults.vps.query("SELECT datname FROM pg_database WHERE NOT datallowconn AND datname LIKE %s",
                                (TARGET + "%",))
    assert refusing == [], "a database was left refusing connections"


# --- the migration back to Supabase -------------------------------------------------------------
# Here the run's source is the VPS and its target is Supabase: ``faults.source_relay`` (the
# SUPABASE_* connection) carries what the migration writes.

MIGRATION_SOURCE = "faults_migration_source"
MIGRATION_BLOB_ROWS = 1000
MIGRATION_COPY_BYTES = MIGRATION_BLOB_ROWS * BLOB_BYTES * 2
RESTORING_IN_ONE_TRANSACTION = "--single-transaction"


@pytest.fixture(scope="module")
def migration_source(vps_cluster: PostgresCluster, vps_app_database: str) -> Iterator[str]:
    """The VPS application with a few megabytes more, so a migration's phases can be caught."""
    vps_cluster.fresh_database(MIGRATION_SOURCE, owner=VPS_APP_OWNER, template=vps_app_database)
    vps_cluster.execute(NOTES_SQL + blobs_sql(MIGRATION_BLOB_ROWS, BLOB_BYTES), dbname=MIGRATION_SOURCE,
                        user=VPS_APP_OWNER)
    yield MIGRATION_SOURCE
    vps_cluster.drop_database(MIGRATION_SOURCE)


supabase_project = new_project_fixture("faultproj")  # a Supabase project of its own, which a test may stop


@dataclass
class MigrationFaults:
    faults: FaultEnv
    project: PostgresCluster
    before: dict[str, object]

    def mark_vps(self, text: str) -> str:
        return mark(self.faults.vps, MIGRATION_SOURCE, VPS_APP_OWNER, text)

    def assert_supabase_unchanged(self) -> None:
        wait_for_run_sessions_to_end(self.project)
        assert catalog_snapshot(self.project) == self.before, "Supabase changed"

    def run(self) -> dg.ExecuteInProcessResult:
        return run_migration(self.faults.instance, overwrite=True)

    def recover(self, mark: str) -> None:
        self.faults.full_speed()
        result = self.run()
        assert result.success, step_errors(result)
        assert self.project.query("SELECT count(*) FROM public.notes WHERE body = %s", (mark,))[0][0] == 1
        assert not list(self.faults.env.backup_dir.glob("run-*"))


@pytest.fixture
def migration_faults(faults: FaultEnv, supabase_project: PostgresCluster, migration_source: str) -> MigrationFaults:
    """Runs migrate ``migration_source`` into ``supabase_project``, which already holds a
    successful migration: the state every failure must leave exactly as it was."""
    faults.route_source(supabase_project, "postgres")
    faults.monkeypatch.setenv("LOCAL_DB_NAME", migration_source)
    if not supabase_project.query("SELECT to_regclass('public.blobs') IS NOT NULL")[0][0]:
        faults.full_speed()
        first = run_migration(faults.instance, overwrite=True)
        assert first.success, step_errors(first)
    return MigrationFaults(faults, supabase_project, catalog_snapshot(supabase_project))


def test_sigkill_of_a_migration_inside_its_restore_transaction(migration_faults: MigrationFaults) -> None:
    faults = migration_faults.faults
    mark = migration_faults.mark_vps("not on Supabase before the killed migration")
    faults.source_relay.bytes_per_second = PACED / 3
    start = faults.source_relay.counters.sent_to_server
    run = faults.start_in_background(["migrate", "--overwrite"])
    sent = lambda: faults.source_relay.counters.sent_to_server - start >= 0.4 * MIGRATION_COPY_BYTES  # noqa: E731
    run.wait_until(lambda: sent() and run.running(RESTORING_IN_ONE_TRANSACTION), "the restore into Supabase")
    run.kill()

    migration_faults.assert_supabase_unchanged()
    [killed] = faults.started_runs(MIGRATION_JOB)
    migration_faults.recover(mark)
    record = faults.instance.get_run_by_id(killed.run_id)
    assert record is not None and record.status == dg.DagsterRunStatus.FAILURE
    assert f"run={killed.run_id} cause=its process died" in faults.env.migration_log.read_text()


def test_supabase_stopping_mid_restore_leaves_it_as_it_was(migration_faults: MigrationFaults) -> None:
    faults, project = migration_faults.faults, migration_faults.project
    mark = migration_faults.mark_vps("not on Supabase before it stopped")
    step, cause = faults.interrupted_run(faults.source_relay, PACED / 3, SENT, 0.4 * MIGRATION_COPY_BYTES,
                                         lambda: project.stop("immediate"), migration_faults.run)
    assert step == "restore_into_supabase", cause
    project.restart()
    migration_faults.assert_supabase_unchanged()
    migration_faults.recover(mark)


def test_vps_dropping_connections_mid_dump_leaves_supabase_untouched(migration_faults: MigrationFaults) -> None:
    faults = migration_faults.faults
    step, cause = faults.interrupted_run(faults.vps_relay, PACED / 3, RECEIVED, 0.4 * MIGRATION_COPY_BYTES,
                                         faults.vps_relay.cut_connections, migration_faults.run)
    assert step == "dump_vps_database", cause
    assert "server closed the connection unexpectedly" in cause, cause
    migration_faults.assert_supabase_unchanged()
    assert not list(faults.env.backup_dir.glob("run-*"))
