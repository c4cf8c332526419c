"""The ways to copy the Supabase database to the VPS that the benchmark runs side by side.

Every contender copies the same scope (the job's own ``plan_scope``: Supabase-internal
schemas and unreadable bookkeeping tables left out), reads the source through the same
byte-counting relay, writes into a fresh database, and uses the same PostgreSQL client
programs. The job is run as an operator runs it: the ``wehub-backup`` command, a real
Dagster run recorded in a Dagster instance.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import dagster as dg

from wehub_backup.errors import ToolError
from wehub_backup.pg.clients import PgClient
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.databases import create_database
from wehub_backup.pg.processes import run_tool
from wehub_backup.summary import summarize_run
from wehub_backup.supabase.scope import CopyScope

PGCOPYDB = "pgcopydb"
SOURCE_SUPERUSER = "supabase_admin"
PGCOPYDB_INSTALL_HINT = "apt-get install -y pgcopydb   (Debian/Ubuntu package, PostgreSQL's apt repository has newer ones)"


@dataclass
class Attempt:
    """Everything one run of one contender needs."""

    database: str
    workdir: Path
    source: ConnectionInfo
    target: ConnectionInfo
    passfile: Path
    client: PgClient
    jobs: int
    scope: CopyScope
    dagster_home: Path

    def source_environment(self) -> dict[str, str]:
        return self.source.libpq_environment(self.workdir / "source.pgpass")

    def target_environment(self) -> dict[str, str]:
        return self.target.libpq_environment(self.workdir / "target.pgpass", self.database)

    def create_database(self) -> None:
        with self.target.connect("postgres") as conn:
            create_database(conn, self.database, "UTF8")


Details = dict[str, object]
PLAN_STEP, DUMP_STEP, LOAD_STEP = "plan_supabase_backup", "dump_supabase_database", "restore_into_staging_database"
STAGE_STEP = "recreate_staging_database"
# What the load step reports of an incremental copy (and rows_copied of any streamed one).
INCREMENT_FIGURES = ("chunks_compared", "chunks_copied", "chunk_parts_compared", "chunk_parts_copied", "rows_copied",
                     "rows_from_current_copy", "tables_unchanged", "tables_copied_whole", "copy_data_bytes")
BENCH_BUDGET_BYTES = 10**15


@dataclass(frozen=True)
class Contender:
    key: str
    title: str
    command: str
    run: Callable[[Attempt], Details]


def plain_dump_and_psql(attempt: Attempt) -> Details:
    """The plan's scripts: ``pg_dump`` to one SQL file, ``psql -f`` into an empty database."""
    dump = attempt.workdir / "dump.sql"
    dumped = run_tool(
        [attempt.client.program("pg_dump"), "--format=plain", f"--file={dump}", "--no-password",
         *attempt.scope.pg_dump_arguments()],
        attempt.source_environment(),
    )
    artifact = dump.stat().st_size
    attempt.create_database()
    restored = run_tool(
        [attempt.client.program("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", f"--file={dump}"],
        attempt.target_environment(),
    )
    return {"dump_s": dumped.seconds, "restore_s": restored.seconds, "artifact_bytes": artifact}


def directory_dump_and_restore(attempt: Attempt, compression: tuple[str, ...] = ()) -> Details:
    """``pg_dump -Fd -j N`` then ``pg_restore -j N``, with the tools' default compression or ``compression``."""
    archive = attempt.workdir / "archive"
    dumped = run_tool(
        [attempt.client.program("pg_dump"), "--format=directory", f"--jobs={attempt.jobs}", f"--file={archive}",
         "--no-password", *compression, *attempt.scope.pg_dump_arguments()],
        attempt.source_environment(),
    )
    artifact = sum(f.stat().st_size for f in archive.iterdir())
    attempt.create_database()
    restored = run_tool(
        [attempt.client.program("pg_restore"), f"--dbname={attempt.database}", f"--jobs={attempt.jobs}",
         "--exit-on-error", "--no-password", str(archive)],
        attempt.target_environment(),
    )
    return {"dump_s": dumped.seconds, "restore_s": restored.seconds, "artifact_bytes": artifact}


def uncompressed_directory_dump_and_restore(attempt: Attempt) -> Details:
    """The fastest plain pipeline: ``pg_dump -Fd -j N -Z0`` (no gzip) then ``pg_restore -j N``."""
    return directory_dump_and_restore(attempt, ("--compress=0",))


def pgcopydb_clone(attempt: Attempt) -> Details:
    """``pgcopydb clone``: COPY streamed source -> target, tables and indexes in parallel.

    pgcopydb 0.10 dumps the schema of the whole database before it applies its filters,
    and ``pg_dump`` then fails on the tables ``postgres`` may not read on Supabase
    (``permission denied for table schema_migrations``). So it logs in as the source's
    superuser here, which Supabase never grants; its filters keep the copy the same.
    """
    filters = attempt.workdir / "filters.ini"
    filters.write_text(pgcopydb_filters(attempt.scope))
    attempt.create_database()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(PGPASSFILE=str(attempt.passfile), PATH=f"{attempt.client.bindir}:{env.get('PATH', '/usr/bin:/bin')}")
    source = replace(attempt.source, user=SOURCE_SUPERUSER)
    argv = [PGCOPYDB, "clone", "--source", connection_uri(source), "--target",
            connection_uri(attempt.target, attempt.database), f"--table-jobs={attempt.jobs}",
            f"--index-jobs={attempt.jobs}", f"--dir={attempt.workdir / 'pgcopydb'}", f"--filters={filters}"]
    log_path = attempt.workdir / "pgcopydb.log"
    with open(log_path, "wb") as output:
        # Its own session: pgcopydb signals its whole process group when a sub-process fails.
        finished = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    if finished.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise ToolError("pgcopydb failed:\n" + "\n".join(tail))
    return {}


def pgcopydb_filters(scope: CopyScope) -> str:
    """The job's table exclusions in pgcopydb's filter-file format.

    Not its schema exclusions: pgcopydb 0.10 filters a schema's tables but restores the
    GRANTs on the schema itself, and fails (``schema "graphql" does not exist``). It copies
    the few objects of those schemas instead.
    """
    lines = ["[exclude-table]", *(f"{schema}.{table}" for schema, table in scope.excluded_tables)]
    return "\n".join(lines) + "\n"


def connection_uri(info: ConnectionInfo, dbname: str | None = None) -> str:
    """A password-less URI (the password comes from the password file) at the relayed address."""
    host = info.hostaddr or info.host
    return f"postgres://{info.user}@{host}:{info.port}/{dbname or info.dbname}?sslmode={info.sslmode}"


def project_backup_job(attempt: Attempt, copy_engine: str | None = None, mode: str | None = None) -> Details:
    """``wehub-backup backup TARGET``: a real Dagster run, its environment set as on the VPS.

    ``copy_engine`` sets ``WEHUB_BACKUP_COPY_ENGINE`` and ``mode`` ``WEHUB_BACKUP_MODE``; without
    them the job runs with its defaults (the archive engine, a full copy).
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PG", "SUPABASE_", "LOCAL_", "WEHUB_"))}
    env.update({
        "SUPABASE_DB_HOST": attempt.source.hostaddr or attempt.source.host,
        "SUPABASE_DB_PORT": str(attempt.source.port),
        "SUPABASE_DB_USER": attempt.source.user,
        "SUPABASE_DB_NAME": attempt.source.dbname,
        "SUPABASE_DB_SSLMODE": attempt.source.sslmode,
        "LOCAL_DB_HOST": attempt.target.host,
        "LOCAL_DB_PORT": str(attempt.target.port),
        "LOCAL_DB_USER": attempt.target.user,
        "LOCAL_DB_NAME": "postgres",
        "PGPASSFILE": str(attempt.passfile),
        "WEHUB_BACKUP_DIR": str(attempt.workdir),
        "WEHUB_ARCHIVE": "off",  # the archive of the verified copy is the job's own extra, not part of a copy
        # The benchmark's source is not Supabase: its many runs in one billing cycle must not be refused.
        "WEHUB_EGRESS_BUDGET_BYTES": str(BENCH_BUDGET_BYTES),
        "WEHUB_BACKUP_LOG": str(attempt.dagster_home / "supabase_backup.log"),
        "WEHUB_MIGRATION_LOG": str(attempt.dagster_home / "supabase_migration.log"),
        "WEHUB_PG_BINDIRS": str(attempt.client.bindir),
        "DAGSTER_HOME": str(attempt.dagster_home),
    })
    if copy_engine is not None:
        env["WEHUB_BACKUP_COPY_ENGINE"] = copy_engine
    if mode is not None:
        env["WEHUB_BACKUP_MODE"] = mode
    launched = time.time()
    finished = subprocess.run(backup_command(attempt.database), env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)
    ended = time.time()
    if finished.returncode != 0:
        raise ToolError(f"wehub-backup failed: {(finished.stdout + finished.stderr).strip()[-2000:]}")
    return job_details(attempt.dagster_home, launched, ended)


def backup_command(target: str) -> list[str]:
    """The installed console script, as an operator or cron would start it."""
    script = Path(sys.executable).parent / "wehub-backup"
    return [str(script), "backup", target] if script.exists() else [sys.executable, "-m", "wehub_backup.cli", "backup", target]


def job_details(dagster_home: Path, launched: float, ended: float) -> Details:
    """Step durations and the job's own figures, read back from the Dagster instance."""
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    run_id = instance.get_runs(limit=1)[0].run_id
    summary = summarize_run(instance, run_id)
    starts, ends = [], []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.event_type == dg.DagsterEventType.STEP_START:
            starts.append(record.timestamp)
        elif event is not None and event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            ends.append(record.timestamp)
    steps = dict(summary.step_seconds)
    dump_egress = summary.value(DUMP_STEP, "egress_bytes") or 0
    copy_egress = summary.value(LOAD_STEP, "egress_bytes") or 0
    return {
        "run_id": run_id,
        "mode": summary.value(PLAN_STEP, "mode"),
        "mode_reason": summary.value(PLAN_STEP, "mode_reason"),
        "step_s": steps,
        "before_first_step_s": min(starts) - launched,
        "after_last_step_s": ended - max(ends),
        "between_steps_s": (max(ends) - min(starts)) - sum(steps.values()),
        "egress_bytes": dump_egress + copy_egress,
        "dump_egress_bytes": dump_egress,
        "copy_egress_bytes": copy_egress,
        "artifact_bytes": summary.value(DUMP_STEP, "artifact_bytes"),
        "dump_s": summary.value(DUMP_STEP, "duration_s"),
        "restore_s": summary.value(LOAD_STEP, "duration_s"),
        "verify_s": summary.value("verify_restored_database", "duration_s"),
        "load_phase_s": {phase: summary.value(LOAD_STEP, f"{phase}_s")
                         for phase in ("pre-data", "parts", "copy", "copy-indexes", "copy-digests", "data",
                                       "post-data")},
        "pg_dump_peak_rss_bytes": summary.value(DUMP_STEP, "pg_dump_peak_rss_bytes"),
        "pg_restore_peak_rss_bytes": summary.value(LOAD_STEP, "pg_restore_peak_rss_bytes"),
        "pg_dump_cpu_s": summary.value(DUMP_STEP, "pg_dump_cpu_s"),
        "pg_restore_cpu_s": summary.value(LOAD_STEP, "pg_restore_cpu_s"),
        "current_copy_read_s": summary.value(PLAN_STEP, "current_copy_read_s"),
        "staging_made_from": summary.value(STAGE_STEP, "made_from"),
        "not_a_file_copy_because": summary.value(STAGE_STEP, "not_a_file_copy_because"),
        **{name: summary.value(DUMP_STEP, name) for name in ("chunk_digests", "chunk_digest_bytes")},
        **{name: summary.value(LOAD_STEP, name) for name in INCREMENT_FIGURES},
    }


CONTENDERS = {
    c.key: c for c in (
        Contender("plain", "pg_dump plain + psql (the plan's scripts)",
                  "pg_dump -Fp -f dump.sql; psql -v ON_ERROR_STOP=1 -f dump.sql", plain_dump_and_psql),
        Contender("directory", "pg_dump -Fd -j N + pg_restore -j N",
                  "pg_dump -Fd -j N -f dir; pg_restore -j N --exit-on-error -d db dir", directory_dump_and_restore),
        Contender("directory_z0", "pg_dump -Fd -j N -Z0 + pg_restore -j N",
                  "pg_dump -Fd -j N -Z0 -f dir; pg_restore -j N --exit-on-error -d db dir",
                  uncompressed_directory_dump_and_restore),
        Contender("pgcopydb", "pgcopydb clone",
                  "pgcopydb clone --table-jobs N --index-jobs N --filters f (source login: supabase_admin)", pgcopydb_clone),
        Contender("job", "wehub-backup (the Dagster job)",
                  "wehub-backup backup TARGET", project_backup_job),
        Contender("job_stream", "wehub-backup, stream engine",
                  "WEHUB_BACKUP_COPY_ENGINE=stream wehub-backup backup TARGET",
                  partial(project_backup_job, copy_engine="stream")),
    )
}


@dataclass(frozen=True)
class IncrementalContender(Contender):
    """An incremental run of the job into the copy its full run made, after ``changed_share`` of the
    source's rows changed (0: the source as the last run left it)."""

    changed_share: float = 0.0


_INCREMENTAL_COMMAND = "WEHUB_BACKUP_COPY_ENGINE=stream WEHUB_BACKUP_MODE=incremental wehub-backup backup TARGET"
_incremental_job = partial(project_backup_job, copy_engine="stream", mode="incremental")
# The full run the incremental runs build on (an incremental run streams: the same engine).
INCREMENT_BASE = IncrementalContender("job_incremental_full", "wehub-backup, full run (stream engine) the incremental "
                                      "runs build on", "WEHUB_BACKUP_COPY_ENGINE=stream wehub-backup backup TARGET",
                                      partial(project_backup_job, copy_engine="stream"))
INCREMENTAL_CONTENDERS = {
    c.key: c for c in (
        IncrementalContender("job_incremental_unchanged", "wehub-backup incremental, source unchanged",
                             _INCREMENTAL_COMMAND, _incremental_job, 0.0),
        IncrementalContender("job_incremental_1pct", "wehub-backup incremental, 1% of rows changed",
                             _INCREMENTAL_COMMAND, _incremental_job, 0.01),
        IncrementalContender("job_incremental_5pct", "wehub-backup incremental, 5% of rows changed",
                             _INCREMENTAL_COMMAND, _incremental_job, 0.05),
    )
}


def missing_programs(keys: list[str]) -> list[str]:
    """Install hints for programs the chosen contenders need but this machine lacks."""
    if "pgcopydb" in keys and shutil.which(PGCOPYDB) is None:
        return [f"pgcopydb is not installed: {PGCOPYDB_INSTALL_HINT}"]
    return []


def pgcopydb_version() -> str:
    try:
        output = subprocess.run([PGCOPYDB, "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return "not installed"
    for line in (output.stdout + output.stderr).splitlines():
        if line.startswith("pgcopydb version"):
            return line.split("version", 1)[1].strip()
    return "unknown"
