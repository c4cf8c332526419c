"""Client programs never outlive their step, and what they cost (peak memory of the whole tree)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from wehub_backup.pg.clients import choose_client
from wehub_backup.pg.connection import APPLICATION_NAME, ConnectionInfo
from wehub_backup.pg.processes import STOP_GRACE_SECONDS, ToolProcess, run_tool
from wehub_backup.procfs import live_group_members
from wehub_backup.threads import run_beside
from wehub_backup_tests.faults.process import (
    Watcher,
    command_line,
    descendants,
    interrupt_this_process,
    stopped_pid,
)
from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.support.environment import BackupEnv
from wehub_backup_tests.support.polling import wait_until

# --- a program never outlives its step --------------------------------------------------------

def sleeping_sessions(cluster: PostgresCluster) -> int:
    return cluster.query("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%%'"
                         " AND application_name = %s", (APPLICATION_NAME,))[0][0]


def test_an_interrupt_stops_the_program_and_its_query(backup_env: BackupEnv, vps_cluster: PostgresCluster,
                                                      tmp_path: Path) -> None:
    """A KeyboardInterrupt in the main thread while psql waits for a 60-second query."""
    vps = ConnectionInfo(vps_cluster.host, vps_cluster.port, "postgres", "postgres", "disable", backup_env.pgpassfile)
    psql = choose_client(vps_cluster.major).program("psql")
    logged: list[str] = []
    with vps.tool_environment(tmp_path / "vps.pgpass") as env, \
            Watcher(lambda: sleeping_sessions(vps_cluster) > 0, interrupt_this_process) as watcher, \
            pytest.raises(KeyboardInterrupt) as raised:
        run_tool([psql, "--no-psqlrc", "--no-password", "-c", "SELECT pg_sleep(60)"], env, log=logged.append)
    assert watcher.fired
    pid = stopped_pid(raised.value.__notes__, "psql")
    assert logged == [f"stopped psql (pid {pid}) and its process group: the step was interrupted (KeyboardInterrupt)"]
    assert live_group_members(pid) == []
    wait_until(lambda: sleeping_sessions(vps_cluster) == 0, "the stopped psql's query to be cancelled", 10)


def test_peak_memory_counts_every_worker_of_a_parallel_dump(backup_env: BackupEnv, vps_cluster: PostgresCluster,
                                                             tmp_path: Path) -> None:
    """One 32 MiB bytea value: the worker that copies it receives 64 MiB of hex in one row, while
    the leader holds only the catalog."""
    value_bytes = 32 * 2**20
    vps_cluster.fresh_database("wehub_rss")
    vps_cluster.execute("CREATE TABLE big (b bytea); CREATE TABLE small (i int);"
                        f"INSERT INTO big SELECT decode(repeat('ab', {value_bytes}), 'hex')", dbname="wehub_rss")
    source = ConnectionInfo(vps_cluster.host, vps_cluster.port, "postgres", "wehub_rss", "disable",
                            backup_env.pgpassfile)
    pg_dump = choose_client(vps_cluster.major).program("pg_dump")
    try:
        with source.tool_environment(tmp_path / "source.pgpass") as env:
            run = run_tool([pg_dump, "--format=directory", "--jobs=2", f"--file={tmp_path / 'archive'}",
                            "--no-password"], env)
    finally:
        vps_cluster.drop_database("wehub_rss")
    assert run.peak_rss_bytes > 2 * value_bytes, run.peak_rss_bytes


def test_a_program_that_ignores_the_stop_is_killed() -> None:
    """A program that ignores SIGINT gets SIGKILL once the grace period is over, and the line says so."""
    script = "trap '' INT; sleep 60"
    # The shell's own child: by then the shell ignores SIGINT.
    waiting = lambda: any(command_line(pid).startswith("sleep 60") for pid in descendants(os.getpid()))  # noqa: E731
    logged: list[str] = []
    with Watcher(waiting, interrupt_this_process) as watcher, pytest.raises(KeyboardInterrupt) as raised:
        run_tool(["/bin/sh", "-c", script], dict(os.environ), log=logged.append)
    assert watcher.fired
    pid = stopped_pid(raised.value.__notes__, "sh")
    assert logged == [f"stopped sh (pid {pid}) and its process group with SIGKILL (still running "
                      f"{STOP_GRACE_SECONDS:.0f}s after SIGINT): the step was interrupted (KeyboardInterrupt)"]
    assert live_group_members(pid) == [] and not waiting()


def test_a_failure_beside_a_program_stops_it_at_once() -> None:
    """The dump fingerprints its snapshot beside pg_dump: when that fails, pg_dump is stopped
    there and then, not waited for until it would have finished its download."""
    logged: list[str] = []
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the snapshot's session was lost") as raised, \
            ToolProcess(["/bin/sh", "-c", "sleep 60"], dict(os.environ), log=logged.append) as program:
        run_beside(program.finish, _fail_beside, "program", on_failure=program.stop_because)
    assert time.monotonic() - started < STOP_GRACE_SECONDS + 10
    pid = stopped_pid(raised.value.__notes__, "sh")
    assert logged == [f"stopped sh (pid {pid}) and its process group: the step failed beside it (RuntimeError)"]
    assert live_group_members(pid) == []


def _fail_beside() -> None:
    time.sleep(0.5)
    raise RuntimeError("the snapshot's session was lost")
