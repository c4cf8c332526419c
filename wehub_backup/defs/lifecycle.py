"""A run's life as Dagster sees it: its start and end lines, its locks, its directories, and
the runs that died without reporting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import dagster as dg

from wehub_backup.defs.backup.config import BackupConfig
from wehub_backup.defs.egress import record_killed_run_egress
from wehub_backup.defs.interrupts import stop_step
from wehub_backup.defs.names import BACKUP_JOB, MIGRATION_JOB, TARGET_TAG
from wehub_backup.defs.resources import BackupWorkspace
from wehub_backup.pg.connection import MAINTENANCE_DATABASE, ConnectionInfo, error_line
from wehub_backup.pg.relay import read_progress
from wehub_backup.preflight import connect_or_explain
from wehub_backup.run.locks import TargetLock
from wehub_backup.run.log import append_log_line
from wehub_backup.run.workdir import RunDirectory, ensure_private_directory


class RunDirectories(NamedTuple):
    """A run's working directory (the dump, on disk) and its secrets directory (password files,
    on a memory file system)."""

    work: Path
    secrets: Path


def start_run(context: dg.OpExecutionContext, workspace: BackupWorkspace, target: str,
              detail: str = "") -> RunDirectories:
    """Begin a run of either job: its start line, and fresh directories (left-overs of dead runs go,
    and their egress is recorded)."""
    append_log_line(run_log(workspace, context.job_name), context.job_name, "start", target, detail)
    backup_dir = Path(workspace.backup_dir)
    for stale in RunDirectory.stale(backup_dir):
        egress_bytes = read_progress(stale)
        context.log.info(f"removed working files of a run that died: {RunDirectory.discard(stale)}")
        record_dead_run(context, RunDirectory.run_id_of(stale), workspace, egress_bytes)
    secrets_root = ensure_private_directory(workspace.runtime_root())
    for stale in RunDirectory.sweep_stale(secrets_root):
        context.log.info(f"removed password files of a run that died: {stale}")
    return RunDirectories(RunDirectory.create(backup_dir, context.run_id),
                          RunDirectory.create(secrets_root, context.run_id))


def finish_run(run_id: str, job: str, workspace: BackupWorkspace, event: str, target: str, detail: str = "") -> None:
    """End a run of either job: remove its directories, release its locks, write its log line."""
    RunDirectory.remove(Path(workspace.backup_dir), run_id)
    RunDirectory.remove(workspace.runtime_root(), run_id)
    for key in run_lock_keys(run_id):
        TargetLock.release(key)
    append_log_line(run_log(workspace, job), job, event, target, detail)


def run_log(workspace: BackupWorkspace, job: str) -> Path:
    """The plain-text log of a job's runs: the plan's supabase_backup.log or supabase_migration.log."""
    return Path(workspace.migration_log if job == MIGRATION_JOB else workspace.backup_log)


def lock_on_vps(vps_info: ConnectionInfo, key: str, name: str) -> None:
    """Hold the advisory lock on ``name`` for the run, in a VPS session of its own; the step
    running when it is lost fails at once."""
    TargetLock.acquire(key, connect_or_explain(vps_info, "the VPS server", MAINTENANCE_DATABASE), name,
                       on_lost=stop_step)


def run_lock_keys(run_id: str) -> tuple[str, str]:
    """A run holds up to two locks: its target's, and (a migration) its source database's."""
    return run_id, f"{run_id}/source"


def require_run_locks(context: dg.OpExecutionContext) -> None:
    """Before each step: ``LockLost`` if the run has lost a lock it took."""
    for key in run_lock_keys(context.run_id):
        TargetLock.require_held(key)


def failure_detail(context: dg.HookContext) -> str:
    cause = error_line(context.op_exception) if context.op_exception else "unknown error"
    return f"step={context.op.name} cause={cause}"


def record_dead_run(context: dg.OpExecutionContext, run_id: str, workspace: BackupWorkspace,
                    egress_bytes: int = 0) -> None:
    """Mark a run whose process died (SIGKILL, out of memory, reboot) as failed, and record the
    egress it had received and not recorded (``egress_bytes``, from its working directory, counts
    everything since its dump began: the stream engine's copy crosses the dump's relay).

    Such a run cannot report itself, and Dagster's run monitoring cannot check the worker of a
    run it did not launch: it would show as running for ever and no failure alert would go out.
    The run that finds its abandoned working files reports it instead.
    """
    run = context.instance.get_run_by_id(run_id)
    if run is None:
        return
    if recorded := record_killed_run_egress(context.instance, run, egress_bytes, context.run_id):
        context.log.info(f"recorded the {recorded} bytes of Supabase egress run {run_id} received before it died")
    if run.is_finished:
        return
    cause = f"its process died without reporting (found by run {context.run_id})"
    context.instance.report_run_failed(run, message=f"Run {run_id} failed: {cause}")
    append_log_line(run_log(workspace, run.job_name), run.job_name, "failure", requested_target(run),
                    f"run={run_id} cause={cause}")


def default_jobs() -> int:
    """pg_dump/pg_restore workers when the config says 0: one per core, at most 4."""
    return min(4, os.cpu_count() or 1)


def run_target(run: dg.DagsterRun) -> str | None:
    """The database a run wrote to: its tag once validated, else a ``target_database`` in its config."""
    return run.tags.get(TARGET_TAG) or _config_value(run.run_config, "target_database")


def requested_target(run: dg.DagsterRun | None) -> str:
    """The run's target for its log line; a backup run configured with none went to the default."""
    if run is None:
        return "(unknown)"
    return run_target(run) or (BackupConfig().target_database if run.job_name == BACKUP_JOB else "(unknown)")


def _config_value(config: object, key: str) -> str | None:
    """The first string stored under ``key`` anywhere in nested run config."""
    if not isinstance(config, Mapping):
        return None
    if isinstance(config.get(key), str):
        return config[key]
    return next((found for value in config.values() if (found := _config_value(value, key))), None)
