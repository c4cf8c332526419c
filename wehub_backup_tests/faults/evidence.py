"""What a fault may not leave behind: a changed target, a staging database, working files.

A target is compared by identity (its OID: a swap would bring another database under the
same name) and by content (every row of every table, as text, hashed by the server), computed
independently of the job's own fingerprints.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from psycopg import sql

from wehub_backup.pg.connection import APPLICATION_NAME
from wehub_backup.run.targets import retired_name, staging_name
from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.support.polling import wait_until

_USER_TABLES = """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND n.nspname !~ '^pg_toast' ORDER BY 1, 2"""


@dataclass(frozen=True)
class DatabaseState:
    oid: int
    tables: tuple[tuple[str, str, int, str], ...]


def database_oids(cluster: PostgresCluster) -> dict[str, int]:
    """Every database of a server by name: a created, dropped or renamed one shows here."""
    return dict(cluster.query("SELECT datname, oid::bigint FROM pg_database"))


def database_state(cluster: PostgresCluster, name: str) -> DatabaseState | None:
    """A database's identity and the content of all its tables, or None if it does not exist."""
    oid = database_oids(cluster).get(name)
    if oid is None:
        return None
    tables = []
    with cluster.connect(name) as conn:
        for schema, table in conn.execute(_USER_TABLES).fetchall():
            rows, digest = conn.execute(sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(md5(r::text), '' ORDER BY md5(r::text))), '')"
                " FROM {}.{} AS r").format(sql.Identifier(schema), sql.Identifier(table))).fetchone()
            tables.append((schema, table, rows, digest))
    return DatabaseState(oid, tuple(tables))


def leftovers(cluster: PostgresCluster, target: str, backup_dir: Path) -> list[str]:
    """Staging and retired databases and run directories that outlived their run."""
    found = [name for name in database_oids(cluster) if name in (staging_name(target), retired_name(target))]
    found += [str(path) for path in backup_dir.glob("run-*")] if backup_dir.is_dir() else []
    return found


def wait_for_run_sessions_to_end(cluster: PostgresCluster, timeout: float = 30.0) -> None:
    """A killed run's server sessions end when the server notices; a statement in progress
    (a rename waiting for sessions to leave) first runs to its end."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    wait_until(lambda: cluster.query(query, (APPLICATION_NAME,))[0][0] == 0,
               f"the killed run's sessions on {cluster.name} to end", timeout)


STREAM_READS, STREAM_WRITES = "COPY (SELECT%", "COPY %FROM STDIN%"  # a stream copy's statements, as LIKE patterns


def run_sessions_copying(cluster: PostgresCluster, statement_like: str) -> list[int]:
    """The run's sessions on ``cluster`` (any database) in a copy statement that matches the LIKE
    pattern ``statement_like``: running it, or still in its transaction after it. A stream copy's
    session ends once its range is through, and a server may well finish sending a range (into the
    kernel's socket buffers, megabytes on some machines) long before the reader has it all."""
    return [row[0] for row in cluster.query(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND query LIKE %s"
        " AND state IN ('active', 'idle in transaction')", (APPLICATION_NAME, statement_like))]


def step_failure(result: dg.ExecuteInProcessResult) -> tuple[str | None, str]:
    """The failed step and the whole message of the exception its op raised, without Dagster's
    "Error occurred while executing op" wrapper or the exception's class name."""
    return first_step_failure(result.all_events)


def recorded_step_failure(instance: dg.DagsterInstance, run_id: str) -> tuple[str | None, str]:
    """``step_failure`` of a run read back from the instance (a run another process executed)."""
    return first_step_failure([record.dagster_event for record in
                               instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)])


def first_step_failure(events: list[dg.DagsterEvent]) -> tuple[str | None, str]:
    for event in events:
        if event.is_step_failure:
            error = event.event_specific_data.error
            while error.cause is not None and "while executing op" in error.message:
                error = error.cause
            head, _, rest = error.message.strip().partition(": ")
            return event.step_key, rest if head.endswith(error.cls_name or "\0") else error.message.strip()
    return None, ""


@contextmanager
def shared_dagster_instance() -> Iterator[tuple[Path, dg.DagsterInstance]]:
    """One SQLite-backed instance for a whole module, in memory-backed ``/dev/shm`` where there
    is one: creating an instance costs about a second and every run event is a SQLite commit.
    A run started from the command line finds the same storage through ``DAGSTER_HOME``."""
    home = Path(tempfile.mkdtemp(prefix="wehub-dagster-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    (home / "dagster.yaml").write_text("")
    try:
        with dg.instance_for_test(temp_dir=str(home), set_dagster_home=False) as instance:
            yield home, instance
    finally:
        shutil.rmtree(home, ignore_errors=True)
