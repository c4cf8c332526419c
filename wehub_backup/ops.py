"""The ops of the backup job: thin wrappers that call ``backup.py`` and attach metadata.

Ops run one after another in one process (``in_process_executor``): the source snapshot,
the run lock and the working directory belong to that process, and die with it.
"""


import os
import resource
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
from pydantic import Field

from wehub_backup import backup, databases, egress, migration, preflight
from wehub_backup.backup import BackupPlan, DumpResult, RestoreResult, VerificationResult
from wehub_backup.fingerprint import DatabaseFingerprint
from wehub_backup.migration import MigrationPlan
from wehub_backup.runlog import RunDirectory, append_log_line, directory_bytes
from wehub_backup.settings import BackupWorkspace, ConnectionInfo, PostgresDatabase
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
    force_over_budget: bool = Field(
        default=False,
        description="Run even if the expected Supabase egress would exceed WEHUB_EGRESS_BUDGET_BYTES this billing cycle.",
    )


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
    workdir = start_run(context, workspace, config.target_database)
    vps_info = vps.connection_info()
    plan = backup.plan_backup(
        config.target_database, supabase.connection_info(), vps_info, workdir,
        excluded_schemas=config.excluded_schemas, excluded_tables=config.excluded_tables,
        extra_bindirs=workspace.extra_bindirs(), jobs=config.parallel_jobs or min(4, _cpu_count()),
    )
    budget = egress.check_run_budget(context.instance, context.job_name, plan.catalog.size_bytes,
                                     config.force_over_budget, context.log)
    _lock_on_vps(vps_info, context.run_id, plan.target)
    context.instance.add_run_tags(context.run_id, {TARGET_TAG: plan.target})
    context.add_output_metadata({
        "target": plan.target,
        "source_server_version": plan.source.version,
        "vps_server_version": plan.target_server.version,
        "pg_dump": f"{plan.client.version} ({plan.client.bindir})",
        "source_database_bytes": plan.catalog.size_bytes,
        "egress_used_this_cycle_bytes": budget.usage.used_bytes,
        "egress_estimate_bytes": budget.estimate_bytes,
        "left_out": _markdown_list([str(item) for item in plan.scope.left_out]),
        "restore_session_settings": _settings_text(plan.restore_settings),
    })
    return plan


@dg.op
def dump_supabase_database(
    context: dg.OpExecutionContext, plan: BackupPlan, supabase: PostgresDatabase, workspace: BackupWorkspace
) -> DumpResult:
    """pg_dump from a held snapshot, counting the bytes Supabase sends (its egress)."""
    try:
        dump = backup.dump_source(plan, supabase.connection_info(), context.log.info,
                                  low_priority=workspace.low_priority)
    except backup.DumpFailed as failed:
        raise dg.Failure(description=str(failed), metadata={"egress_bytes": failed.egress_bytes}) from failed
    context.add_output_metadata({"egress_bytes": dump.egress_bytes, **dump_metadata(dump, workspace)})
    return dump


def dump_metadata(dump: DumpResult, workspace: BackupWorkspace) -> dict[str, object]:
    """What a dump held and cost, for the dump step of either job."""
    return {
        "artifact_bytes": dump.artifact_bytes,
        "duration_s": _seconds(dump.seconds),
        "tables": len(dump.fingerprint.tables),
        "rows": dump.fingerprint.total_rows,
        "pg_dump_peak_rss_bytes": dump.pg_dump.peak_rss_bytes,
        "pg_dump_cpu_s": _seconds(dump.pg_dump.cpu_seconds),
        "backup_dir_bytes": directory_bytes(Path(workspace.backup_dir)),
        "per_table": _table_summary(dump.fingerprint),
    }


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
    finish_run(context.run_id, context.job_name, workspace, "success", plan.target)
    context.add_output_metadata(run_process_usage())


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
    if databases.TargetLock.holds(context.run_id):
        try:
            backup.drop_staging(context.resources.vps.connection_info(), target)
        except Exception as error:  # noqa: BLE001 - cleanup must not hide the original failure
            context.log.warning(f"could not drop the staging database: {preflight.error_line(error)}")
    finish_run(context.run_id, context.job_name, workspace, "failure", target, failure_detail(context))


def start_run(context: dg.OpExecutionContext, workspace: BackupWorkspace, target: str, detail: str = "") -> Path:
    """Begin a run of either job: its start line, and a fresh working directory (left-overs of dead runs go)."""
    append_log_line(run_log(workspace, context.job_name), context.job_name, "start", target, detail)
    backup_dir = Path(workspace.backup_dir)
    for stale in RunDirectory.sweep_stale(backup_dir):
        context.log.info(f"removed working files of a run that died: {stale}")
        record_dead_run(context, RunDirectory.run_id_of(stale), workspace)
    return RunDirectory.create(backup_dir, context.run_id)


def finish_run(run_id: str, job: str, workspace: BackupWorkspace, event: str, target: str, detail: str = "") -> None:
    """End a run of either job: remove its working files, release its locks, write its log line."""
    RunDirectory.remove(Path(workspace.backup_dir), run_id)
    for key in run_lock_keys(run_id):
        databases.TargetLock.release(key)
    append_log_line(run_log(workspace, job), job, event, target, detail)


def run_log(workspace: BackupWorkspace, job: str) -> Path:
    """The plain-text log of a job's runs: the plan's supabase_backup.log or supabase_migration.log."""
    return Path(workspace.migration_log if job == MIGRATION_JOB else workspace.backup_log)


def _settings_text(settings: dict[str, str]) -> str:
    """Session settings the restore needs (money printed in the other side's locale), or "-"."""
    return ", ".join(f"{name}={value}" for name, value in settings.items()) or "-"


def _lock_on_vps(vps_info: ConnectionInfo, key: str, name: str) -> None:
    """Hold the advisory lock on ``name`` for the run, in a VPS session of its own."""
    databases.TargetLock.acquire(key, preflight.connect_or_explain(vps_info, "the VPS server",
                                                                   preflight.MAINTENANCE_DATABASE), name)


def run_lock_keys(run_id: str) -> tuple[str, str]:
    """A run holds up to two locks: its target's, and (a migration) its source database's."""
    return run_id, f"{run_id}/source"


def failure_detail(context: dg.HookContext) -> str:
    cause = preflight.error_line(context.op_exception) if context.op_exception else "unknown error"
    return f"step={context.op.name} cause={cause}"


def record_dead_run(context: dg.OpExecutionContext, run_id: str, workspace: BackupWorkspace) -> None:
    """Mark a run whose process died (SIGKILL, out of memory, reboot) as failed.

    Such a run cannot report itself, and Dagster's run monitoring cannot check the worker of a
    run it did not launch: it would show as running for ever and no failure alert would go out.
    The run that finds its abandoned working files reports it instead.
    """
    run = context.instance.get_run_by_id(run_id)
    if run is None or run.is_finished:
        return
    cause = f"its process died without reporting (found by run {context.run_id})"
    context.instance.report_run_failed(run, message=f"Run {run_id} failed: {cause}")
    append_log_line(run_log(workspace, run.job_name), run.job_name, "failure", requested_target(run),
                    f"run={run_id} cause={cause}")


def run_process_usage() -> dict[str, dg.MetadataValue | int]:
    """Peak RSS and CPU time of the run's own process; its pg_dump/pg_restore children report theirs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"run_peak_rss_bytes": usage.ru_maxrss * 1024, "run_cpu_s": _seconds(usage.ru_utime + usage.ru_stime)}


def _cpu_count() -> int:
    return os.cpu_count() or 1


def run_target(run: dg.DagsterRun) -> "str | None":
    """The database a run wrote to: its tag once validated, else a ``target_database`` in its config."""
    return run.tags.get(TARGET_TAG) or _config_value(run.run_config, "target_database")


def requested_target(run: "dg.DagsterRun | None") -> str:
    """The run's target for its log line; a backup run configured with none went to the default."""
    if run is None:
        return "(unknown)"
    return run_target(run) or BackupConfig().target_database


def _config_value(config: object, key: str) -> "str | None":
    """The first string stored under ``key`` anywhere in nested run config."""
    if not isinstance(config, Mapping):
        return None
    if isinstance(config.get(key), str):
        return config[key]
    return next((found for value in config.values() if (found := _config_value(value, key))), None)


# --- Migration: VPS -> Supabase ---

MIGRATION_JOB = "migrate_vps_to_supabase"
# The advisory-lock name of the migration target: one migration into Supabase at a time.
MIGRATION_LOCK = "supabase"


class MigrationConfig(dg.Config):
    """What to migrate from the VPS database (LOCAL_DB_NAME) into Supabase, and whether to replace what is there."""

    overwrite: bool = Field(
        default=False,
        description="Replace app schemas that already hold objects on Supabase (after a failover: yes).",
    )
    app_schemas: list[str] = Field(
        default=[], description="VPS schemas to migrate; empty means every schema Supabase does not manage."
    )
    excluded_tables: list[str] = Field(default=[], description="schema.table names not migrated.")
    parallel_jobs: int = Field(default=0, description="pg_dump workers; 0 sizes them to the CPU count (max 4).")


@dg.op(tags={"kind": "preflight"})
def plan_vps_migration(
    context: dg.OpExecutionContext,
    config: MigrationConfig,
    vps: PostgresDatabase,
    supabase: PostgresDatabase,
    workspace: BackupWorkspace,
) -> MigrationPlan:
    """Lock, then check versions, extensions, roles, privileges and what Supabase holds; nothing changes yet.

    The source database is locked too, so a backup cannot swap it while it is being read.
    """
    vps_info, supabase_info = vps.connection_info(), supabase.connection_info()
    workdir = start_run(context, workspace, supabase_info.describe(), f"source={vps_info.dbname}")
    context.instance.add_run_tags(context.run_id, {TARGET_TAG: supabase_info.describe()})
    for key, name in zip(run_lock_keys(context.run_id), (MIGRATION_LOCK, vps_info.dbname)):
        _lock_on_vps(vps_info, key, name)
    plan = migration.plan_migration(
        vps_info, supabase_info, workdir, overwrite=config.overwrite, app_schemas=config.app_schemas,
        excluded_tables=config.excluded_tables, extra_bindirs=workspace.extra_bindirs(),
        jobs=config.parallel_jobs or min(4, _cpu_count()), log=context.log.warning,
    )
    context.add_output_metadata({
        "source_database": plan.source_database,
        "vps_server_version": plan.source.version,
        "supabase_server_version": plan.target_server.version,
        "pg_dump": f"{plan.client.version} ({plan.client.bindir})",
        "app_schemas": _markdown_list(plan.app_schemas),
        "replaced_on_supabase": _markdown_list(plan.existing_schemas),
        "overwrite": plan.overwrite,
        "owners_on_supabase": f"{plan.target_server.current_user} (on the VPS: {', '.join(plan.owners_replaced) or '-'})",
        "extension_references_rewritten": _markdown_list(
            [f"{r.extension}: {r.source_schema} -> {r.target_schema}" for r in plan.relocations]),
        "triggers_recreated": _markdown_list([t.name for t in plan.outside_triggers]),
        "left_out": _markdown_list([str(item) for item in plan.left_out]),
        "restore_session_settings": _settings_text(plan.restore_settings),
    })
    return plan


@dg.op
def dump_vps_database(
    context: dg.OpExecutionContext, plan: MigrationPlan, vps: PostgresDatabase, workspace: BackupWorkspace
) -> DumpResult:
    """pg_dump of the app schemas from a held snapshot, fingerprinted in the same snapshot."""
    dump = backup.dump_source(plan, vps.connection_info(), context.log.info, low_priority=workspace.low_priority,
                              count_egress=False)
    context.add_output_metadata(dump_metadata(dump, workspace))
    return dump


@dg.op
def restore_into_supabase(
    context: dg.OpExecutionContext, plan: MigrationPlan, dump: DumpResult, supabase: PostgresDatabase,
    workspace: BackupWorkspace,
) -> migration.MigrationRestore:
    """Empty the app schemas and restore them in one transaction: on any error Supabase stays as it was."""
    restored = migration.restore_into_supabase(plan, dump, supabase.connection_info(), context.log.info,
                                               low_priority=workspace.low_priority)
    context.add_output_metadata({
        "bytes_sent_to_supabase": restored.bytes_sent,
        "duration_s": _seconds(restored.seconds),
        "references_rewritten": restored.rewritten_references,
        "privileges_left_out": _markdown_list(restored.privileges_left_out),
        "psql_peak_rss_bytes": restored.psql.peak_rss_bytes,
        "psql_cpu_s": _seconds(restored.psql.cpu_seconds),
    })
    return restored


@dg.op
def verify_supabase_copy(
    context: dg.OpExecutionContext, plan: MigrationPlan, dump: DumpResult, restored: migration.MigrationRestore,
    supabase: PostgresDatabase,
) -> migration.MigrationVerification:
    """Rows and content digests, sequences and object counts against the VPS snapshot; sequences past their columns."""
    verified = migration.verify_supabase(plan, dump, supabase.connection_info())
    context.add_output_metadata({
        "duration_s": _seconds(verified.seconds),
        "tables_verified": verified.tables,
        "rows_verified": verified.rows,
        "sequences_checked": verified.sequences_checked,
        "object_counts": dg.MetadataValue.json(verified.fingerprint.object_counts),
        "per_table": _table_summary(verified.fingerprint),
    })
    return verified


@dg.op
def cleanup_migration_files(
    context: dg.OpExecutionContext, plan: MigrationPlan, verified: migration.MigrationVerification,
    supabase: PostgresDatabase, workspace: BackupWorkspace,
) -> None:
    """Remove the run's working files and release its locks; log the success line."""
    finish_run(context.run_id, context.job_name, workspace, "success",
               supabase.connection_info().describe(), f"source={plan.source_database} rows={verified.rows}")
    context.add_output_metadata(run_process_usage())


@dg.failure_hook(required_resource_keys={"supabase", "workspace"})
def clean_up_failed_migration(context: dg.HookContext) -> None:
    """On failure: remove working files, release the locks, log the cause.

    Supabase needs no cleaning: the restore's single transaction either committed whole or
    left nothing behind.
    """
    workspace: BackupWorkspace = context.resources.workspace
    finish_run(context.run_id, context.job_name, workspace, "failure",
               context.resources.supabase.connection_info().describe(), failure_detail(context))


def migration_run_config(overwrite: bool) -> dict:
    """Run config of a migration run, as the command line launches it."""
    return {"ops": {"plan_vps_migration": {"config": {"overwrite": overwrite}}}}
