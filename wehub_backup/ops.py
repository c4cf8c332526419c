"""The ops of the backup job: thin wrappers that call ``backup.py`` and attach metadata.

Ops run one after another in one process (``in_process_executor``): the source snapshot,
the run lock and the working directory belong to that process, and die with it.
"""


import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from wehub_backup import backup, databases
from wehub_backup.backup import BackupPlan, DumpResult, RestoreResult, VerificationResult
from wehub_backup.fingerprint import DatabaseFingerprint
from wehub_backup.runlog import RunDirectory, append_log_line
from wehub_backup.settings import BackupWorkspace, PostgresDatabase
from wehub_backup.supabase_compat import DEFAULT_EXCLUDED_SCHEMAS, DEFAULT_EXCLUDED_TABLES

TARGET_TAG = "wehub/target"
BACKUP_JOB = "backup_supabase_to_vps"


class BackupConfig(dg.Config):
    """What to back up into: the VPS database that will hold the copy, and what to leave out."""

    target_database: str = Field(
        default="wehub_backup_test",
        description="VPS database that receives the verified copy (wehub_backup_test while testing, wehub in production).",
    )
    excluded_schemas: list[str] = Field(
        default=list(DEFAULT_EXCLUDED_SCHEMAS), description="Supabase-internal schemas not copied."
    )
    excluded_tables: list[str] = Field(
        default=list(DEFAULT_EXCLUDED_TABLES), description="schema.table names not copied (service bookkeeping)."
    )
    parallel_jobs: int = Field(default=0, description="pg_dump/pg_restore workers; 0 sizes them to the CPU count (max 4).")


class PromoteConfig(dg.Config):
    """How to treat the application's sessions on the old copy when the new one is swapped in."""

    on_connected_sessions: str = Field(
        default="wait", description="'wait' for sessions on the target to end, or 'terminate' them."
    )
    connected_sessions_timeout_seconds: int = Field(default=300, description="How long 'wait' waits.")


def _seconds(value: float) -> dg.MetadataValue:
    return dg.MetadataValue.float(round(value, 3))


def _markdown_list(items: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {item}" for item in items) or "(none)")


def _table_summary(fingerprint: DatabaseFingerprint) -> dg.MetadataValue:
    rows = [f"| {name} | {t.rows} | {t.size_bytes} |" for name, t in sorted(fingerprint.tables.items())]
    return dg.MetadataValue.md("| table | rows | bytes |\n|---|---:|---:|\n" + "\n".join(rows))


@dg.op(tags={"kind": "preflight"})
def plan_supabase_backup(
    context: dg.OpExecutionContext,
    config: BackupConfig,
    supabase: PostgresDatabase,
    vps: PostgresDatabase,
    workspace: BackupWorkspace,
) -> BackupPlan:
    """Check names, connections, versions, privileges and disk space; nothing is changed yet."""
    backup_dir = Path(workspace.backup_dir)
    append_log_line(Path(workspace.backup_log), context.job_name, "start", config.target_database)
    for stale in RunDirectory.sweep_stale(backup_dir):
        context.log.info(f"removed working files of a run that died: {stale}")
    workdir = RunDirectory.create(backup_dir, context.run_id)
    vps_info = vps.connection_info()
    plan = backup.plan_backup(
        config.target_database, supabase.connection_info(), vps_info, workdir,
        excluded_schemas=config.excluded_schemas, excluded_tables=config.excluded_tables,
        extra_bindirs=workspace.extra_bindirs(), jobs=config.parallel_jobs or min(4, _cpu_count()),
    )
    databases.TargetLock.acquire(context.run_id, backup.connect_or_explain(vps_info, "the VPS server",
                                 backup.MAINTENANCE_DATABASE), plan.target)
    context.instance.add_run_tags(context.run_id, {TARGET_TAG: plan.target})
    context.add_output_metadata({
        "target": plan.target,
        "source_server_version": plan.source.version,
        "vps_server_version": plan.target_server.version,
        "pg_dump": f"{plan.client.version} ({plan.client.bindir})",
        "source_database_bytes": plan.catalog.size_bytes,
        "left_out": _markdown_list([str(item) for item in plan.scope.left_out]),
    })
    return plan


@dg.op
def dump_supabase_database(
    context: dg.OpExecutionContext, plan: BackupPlan, supabase: PostgresDatabase, workspace: BackupWorkspace
) -> DumpResult:
    """pg_dump from a held snapshot, counting the bytes Supabase sends (its egress)."""
    dump = backup.dump_source(plan, supabase.connection_info(), context.log.info, low_priority=workspace.low_priority)
    context.add_output_metadata({
        "egress_bytes": dump.egress_bytes,
        "artifact_bytes": dump.artifact_bytes,
        "duration_s": _seconds(dump.seconds),
        "tables": len(dump.fingerprint.tables),
        "rows": dump.fingerprint.total_rows,
        "pg_dump_peak_rss_bytes": dump.pg_dump.peak_rss_bytes,
        "pg_dump_cpu_s": _seconds(dump.pg_dump.cpu_seconds),
        "per_table": _table_summary(dump.fingerprint),
    })
    return dump


@dg.op
def recreate_staging_database(context: dg.OpExecutionContext, plan: BackupPlan, dump: DumpResult,
                              vps: PostgresDatabase) -> str:
    """Drop and recreate ``<target>__staging``; the target itself is never dropped."""
    backup.recreate_staging(plan, vps.connection_info())
    context.add_output_metadata({"staging_database": plan.staging, "encoding": plan.source.encoding})
    return plan.staging


@dg.op
def restore_into_staging_database(
    context: dg.OpExecutionContext, plan: BackupPlan, dump: DumpResult, staging: str,
    vps: PostgresDatabase, workspace: BackupWorkspace,
) -> RestoreResult:
    """pg_restore with --exit-on-error: one error fails the run, nothing is 'ignored'."""
    restored = backup.restore_into_staging(plan, dump, vps.connection_info(), context.log.info,
                                           low_priority=workspace.low_priority)
    context.add_output_metadata({
        "duration_s": _seconds(restored.seconds),
        "standin_roles_created": _markdown_list(restored.standin_roles_created),
        "archive_entries_left_out": restored.left_out_entries,
        "pg_restore_peak_rss_bytes": restored.pg_restore.peak_rss_bytes,
        "pg_restore_cpu_s": _seconds(restored.pg_restore.cpu_seconds),
    })
    return restored


@dg.op
def verify_restored_database(
    context: dg.OpExecutionContext, plan: BackupPlan, dump: DumpResult, restored: RestoreResult, vps: PostgresDatabase
) -> VerificationResult:
    """Row counts, content digests, sequences and object counts of staging against the snapshot."""
    verified = backup.verify_staging(plan, dump, vps.connection_info())
    context.add_output_metadata({
        "duration_s": _seconds(verified.seconds),
        "tables_verified": verified.tables,
        "rows_verified": verified.rows,
        "object_counts": dg.MetadataValue.json(verified.fingerprint.object_counts),
    })
    return verified


@dg.op
def promote_staging_database(
    context: dg.OpExecutionContext, config: PromoteConfig, plan: BackupPlan, dump: DumpResult,
    verified: VerificationResult, vps: PostgresDatabase,
) -> databases.PromoteResult:
    """Swap the verified copy in; the previous copy stays as ``<target>__previous``."""
    if config.on_connected_sessions not in ("wait", "terminate"):
        raise dg.Failure(f"on_connected_sessions must be 'wait' or 'terminate', not {config.on_connected_sessions!r}")
    result = backup.promote(plan, vps.connection_info(), config.on_connected_sessions,  # type: ignore[arg-type]
                            config.connected_sessions_timeout_seconds)
    metadata = {
        "target": plan.target,
        "previous_kept_as": databases.previous_name(plan.target) if result.previous_kept else "(first copy)",
        "sessions_terminated": result.sessions_terminated,
        "waited_s": _seconds(result.waited_seconds),
    }
    context.add_output_metadata(metadata)
    context.log_event(dg.AssetMaterialization(
        asset_key=backup_copy_asset_key(plan.target),
        description=f"Verified copy of the Supabase database in VPS database {plan.target}",
        metadata={
            "egress_bytes": dump.egress_bytes,
            "artifact_bytes": dump.artifact_bytes,
            "rows": verified.rows,
            "tables": verified.tables,
            "dump_duration_s": _seconds(dump.seconds),
            **metadata,
        },
    ))
    return result


@dg.op
def cleanup_backup_files(
    context: dg.OpExecutionContext, plan: BackupPlan, promoted: databases.PromoteResult, workspace: BackupWorkspace
) -> None:
    """Remove the run's working files and release the target lock; log the success line."""
    RunDirectory.remove(Path(workspace.backup_dir), context.run_id)
    databases.TargetLock.release(context.run_id)
    append_log_line(Path(workspace.backup_log), context.job_name, "success", plan.target)


def backup_copy_asset_key(target: str) -> dg.AssetKey:
    return dg.AssetKey(["vps_backup_copy", target])


@dg.failure_hook(required_resource_keys={"vps", "workspace"})
def clean_up_failed_backup(context: dg.HookContext) -> None:
    """On failure: drop the unverified staging copy, remove working files, log the cause.

    The staging database is dropped only by the run that holds the target's lock, so a
    run refused because another one is busy never touches that run's staging copy.
    """
    workspace: BackupWorkspace = context.resources.workspace
    target = requested_target(context.instance.get_run_by_id(context.run_id))
    cause = backup.one_line(context.op_exception) if context.op_exception else "unknown error"
    if databases.TargetLock.holds(context.run_id):
        try:
            backup.drop_staging(context.resources.vps.connection_info(), target)
        except Exception as error:  # noqa: BLE001 - cleanup must not hide the original failure
            context.log.warning(f"could not drop the staging database: {backup.one_line(error)}")
    RunDirectory.remove(Path(workspace.backup_dir), context.run_id)
    databases.TargetLock.release(context.run_id)
    append_log_line(Path(workspace.backup_log), context.job_name, "failure", target,
                    f"step={context.op.name} cause={cause}")


def _cpu_count() -> int:
    return os.cpu_count() or 1


def requested_target(run: "dg.DagsterRun | None") -> str:
    """The run's target: its tag once validated, else what its config asked for."""
    if run is None:
        return "(unknown)"
    if TARGET_TAG in run.tags:
        return run.tags[TARGET_TAG]
    op_config = run.run_config.get("ops", {}).get("plan_supabase_backup", {}).get("config", {})
    return str(op_config.get("target_database", BackupConfig().target_database))
