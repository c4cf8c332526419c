"""The ops of the backup job: thin wrappers around ``wehub_backup.backup``'s steps that attach metadata.

Ops run one after another in one process (``in_process_executor``): the source snapshot,
the run lock and the working directory belong to that process, and die with it.
"""

from datetime import timedelta
from pathlib import Path

import dagster as dg

from wehub_backup.backup.extract import extract_supabase
from wehub_backup.backup.load import RestoreResult, restore_into_staging
from wehub_backup.backup.plan import BackupPlan, check_vps_databases, plan_backup, plan_mode
from wehub_backup.backup.promote import PromoteResult, promote
from wehub_backup.backup.stage import StagingDatabase, drop_staging, recreate_staging
from wehub_backup.backup.verify import VerificationResult, verify_staging
from wehub_backup.config import FULL_EVERY_DAYS_ENV, backup_mode, copy_engine, within_bounds
from wehub_backup.defs.assets import backup_copy_asset_key
from wehub_backup.defs.backup.config import BackupConfig, PromoteConfig
from wehub_backup.defs.egress import check_run_budget
from wehub_backup.defs.failures import reported_failure, tag_step_failure
from wehub_backup.defs.lifecycle import (
    default_jobs,
    failure_detail,
    finish_run,
    lock_on_vps,
    requested_target,
    start_run,
)
from wehub_backup.defs.metadata import (
    chunk_digest_metadata,
    dump_metadata,
    increment_metadata,
    markdown_list,
    readable,
    run_process_usage,
    seconds,
    settings_text,
    stream_metadata,
)
from wehub_backup.defs.names import MODE_TAG, TARGET_TAG
from wehub_backup.defs.outcome import report_outcome
from wehub_backup.defs.resources import BackupWorkspace, PostgresDatabase
from wehub_backup.defs.steps import guarded_op
from wehub_backup.errors import DumpFailed, SettingsError
from wehub_backup.pg.connection import error_line
from wehub_backup.pg.dump import DumpResult
from wehub_backup.run.locks import TargetLock
from wehub_backup.run.manifest import manifest_path
from wehub_backup.run.targets import previous_name
from wehub_backup.run.workdir import RunDirectory


@guarded_op(tags={"kind": "preflight"})
def plan_supabase_backup(
    context: dg.OpExecutionContext,
    config: BackupConfig,
    supabase: PostgresDatabase,
    vps: PostgresDatabase,
    workspace: BackupWorkspace,
) -> BackupPlan:
    """Check names, connections, versions, privileges, disk space and that the target's databases
    are this project's copies; nothing is changed yet."""
    engine = copy_engine(config.copy_engine, workspace.copy_engine)
    requested_mode = backup_mode(config.mode, workspace.backup_mode)
    full_every = timedelta(days=within_bounds(FULL_EVERY_DAYS_ENV, workspace.full_every_days, 1))
    directories = start_run(context, workspace, config.target_database)
    vps_info = vps.connection_info()
    plan = plan_backup(
        config.target_database, supabase.connection_info(), vps_info, directories.work,
        secrets_dir=directories.secrets, excluded_schemas=config.excluded_schemas,
        excluded_tables=config.excluded_tables,
        extra_bindirs=workspace.extra_bindirs(), jobs=config.parallel_jobs or default_jobs(),
        adopt=config.adopt_existing_target, copy_engine=engine, range_bytes=workspace.copy_range_mb * 2**20,
    )
    budget = check_run_budget(context.instance, context.job_name, plan.catalog.first_dump_egress,
                              config.force_over_budget, context.log, requested_mode)
    lock_on_vps(vps_info, context.run_id, plan.target)
    adopted = check_vps_databases(plan, vps_info)
    if adopted:
        context.log.warning(f"adopting {', '.join(adopted)} (adopt_existing_target): the run may replace them")
    plan_mode(plan, vps_info, requested_mode, manifest_path(Path(workspace.backup_dir), plan.target),
              bool(adopted), full_every)
    context.log.info(f"{plan.mode} backup: {plan.mode_reason}")
    if plan.mode != requested_mode:  # an incremental run that must be full costs a full run's egress
        budget = check_run_budget(context.instance, context.job_name, plan.catalog.first_dump_egress,
                                  config.force_over_budget, context.log, plan.mode)
    context.instance.add_run_tags(context.run_id, {TARGET_TAG: plan.target, MODE_TAG: plan.mode})
    context.add_output_metadata(readable({
        "target": plan.target,
        "mode": plan.mode,
        "mode_reason": plan.mode_reason,
        "copy_engine": "stream" if plan.streams else plan.copy_engine,
        **({"current_copy_read_s": seconds(plan.base.seconds)} if plan.base else {}),
        "source_server_version": plan.source.version,
        "vps_server_version": plan.target_server.version,
        "pg_dump": f"{plan.client.version} ({plan.client.bindir})",
        "source_database_bytes": plan.catalog.size_bytes,
        "egress_used_this_cycle_bytes": budget.usage.used_bytes,
        "egress_estimate_bytes": budget.estimate_bytes,
        "left_out": markdown_list([str(item) for item in plan.scope.left_out]),
        "restore_session_settings": settings_text(plan.restore_settings),
        "copy_of": plan.copy_of,
        "adopted": markdown_list(adopted),
    }))
    return plan


@guarded_op
def dump_supabase_database(
    context: dg.OpExecutionContext, plan: BackupPlan, supabase: PostgresDatabase, workspace: BackupWorkspace
) -> DumpResult:
    """pg_dump from a held snapshot, counting the bytes Supabase sends (its egress)."""
    try:
        dump = extract_supabase(plan, supabase.connection_info(), context.log.info,
                                low_priority=workspace.low_priority)
    except DumpFailed as failed:
        raise reported_failure(failed, egress_bytes=failed.egress_bytes) from failed
    context.add_output_metadata(readable({"egress_bytes": dump.egress_bytes, **dump_metadata(dump, workspace),
                                          **(chunk_digest_metadata(dump.fingerprint) if plan.base else {})}))
    return dump


@guarded_op
def recreate_staging_database(context: dg.OpExecutionContext, plan: BackupPlan, dump: DumpResult,
                              vps: PostgresDatabase) -> StagingDatabase:
    """Drop and recreate ``<target>__staging`` (for an incremental run, as a file copy of the current
    copy where it can be); the target itself is never dropped."""
    staged = recreate_staging(plan, dump, vps.connection_info(), context.log.info)
    context.add_output_metadata(readable({
        "staging_database": staged.name, "encoding": plan.source.encoding,
        **({"made_from": "a file copy of the current copy" if staged.from_copy else "empty"} if plan.base else {}),
        **({"not_a_file_copy_because": staged.refusal} if staged.refusal else {}),
    }))
    return staged


@guarded_op
def restore_into_staging_database(
    context: dg.OpExecutionContext, plan: BackupPlan, dump: DumpResult, staging: StagingDatabase,
    vps: PostgresDatabase, workspace: BackupWorkspace,
) -> RestoreResult:
    """pg_restore with --exit-on-error: one error fails the run, nothing is 'ignored'. With the stream
    engine, the rows come by COPY from the dump's held snapshot, and their bytes count as egress here."""
    try:
        restored = restore_into_staging(plan, dump, staging, vps.connection_info(), context.log.info,
                                        low_priority=workspace.low_priority,
                                        before_retry=lambda: TargetLock.require_held_now(context.run_id))
    except Exception as error:
        if dump.held is None:  # the archive engine: the source sent nothing in this step
            raise
        # The stream engine's copy stopped (its lock lost, a signal, a broken link): what the
        # source had sent for it is egress all the same.
        raise reported_failure(error, egress_bytes=dump.held.copied_bytes) from error
    context.add_output_metadata(readable({
        "duration_s": seconds(restored.seconds),
        "standin_roles_created": markdown_list(restored.standin_roles_created),
        "archive_entries_left_out": restored.left_out_entries,
        "pg_restore_peak_rss_bytes": restored.pg_restore.peak_rss_bytes,
        "pg_restore_cpu_s": seconds(restored.pg_restore.cpu_seconds),
        **(stream_metadata(restored) if restored.stream else {}),
        **(increment_metadata(restored.increment) if restored.increment else {}),
    }))
    return restored


@guarded_op
def verify_restored_database(
    context: dg.OpExecutionContext, plan: BackupPlan, dump: DumpResult, restored: RestoreResult, vps: PostgresDatabase
) -> VerificationResult:
    """Row counts, content digests, sequences and object counts of staging against the snapshot (with
    the stream engine, the large tables' digests on both sides were taken during the copy, as each landed)."""
    verified = verify_staging(plan, dump, vps.connection_info(), restored.landed_digests)
    context.add_output_metadata(readable({
        "duration_s": seconds(verified.seconds),
        "tables_verified": verified.tables,
        **({"tables_digested_during_copy": len(restored.landed_digests.of_staging)} if restored.landed_digests else {}),
        "rows_verified": verified.rows,
        "object_counts": dg.MetadataValue.json(verified.fingerprint.object_counts),
    }))
    return verified


@guarded_op
def promote_staging_database(
    context: dg.OpExecutionContext, config: PromoteConfig, plan: BackupPlan, dump: DumpResult,
    verified: VerificationResult, vps: PostgresDatabase,
) -> PromoteResult:
    """Swap the verified copy in, under the run's lock; the previous copy stays as ``<target>__previous``."""
    if config.on_connected_sessions not in ("wait", "terminate"):
        raise SettingsError(f"on_connected_sessions must be 'wait' or 'terminate', not {config.on_connected_sessions!r}")
    result = promote(plan, vps.connection_info(), TargetLock.of(context.run_id),
                     config.on_connected_sessions,  # type: ignore[arg-type]
                     config.connected_sessions_timeout_seconds, dump.schema_digest, verified)
    if result.retired_left:
        context.log.warning(f"could not drop the oldest copy {result.retired_left} after the swap; the next run drops it")
    metadata = {
        "target": plan.target,
        "previous_kept_as": previous_name(plan.target) if result.previous_kept else "(first copy)",
        "sessions_terminated": result.sessions_terminated,
        "waited_s": seconds(result.waited_seconds),
    }
    context.add_output_metadata(readable(metadata))
    context.log_event(dg.AssetMaterialization(
        asset_key=backup_copy_asset_key(plan.target),
        description=f"Verified copy of the Supabase database in VPS database {plan.target}",
        metadata=readable({
            "mode": plan.mode,
            "egress_bytes": dump.run_egress_bytes,
            "artifact_bytes": dump.artifact_bytes,
            "rows": verified.rows,
            "tables": verified.tables,
            "dump_duration_s": seconds(dump.seconds),
            **metadata,
        }),
    ))
    return result


@guarded_op(ins={"archived": dg.In(dg.Nothing)})
def cleanup_backup_files(
    context: dg.OpExecutionContext, plan: BackupPlan, promoted: PromoteResult, workspace: BackupWorkspace
) -> None:
    """Remove the run's working files and release the target lock; log the success line.

    Runs after the archive step (``archived``), which never fails: the lock covers the archive's dump too."""
    finish_run(context.run_id, context.job_name, workspace, "success", plan.target)
    report_outcome(context, success=True)
    context.add_output_metadata(readable(run_process_usage()))


@dg.failure_hook(required_resource_keys={"vps", "workspace"})
def clean_up_failed_backup(context: dg.HookContext) -> None:
    """On failure: close a snapshot the run still holds on the source, drop the unverified staging
    copy, remove working files, log the cause.

    The staging database is dropped only by the run that holds the target's lock, so a
    run refused because another one is busy never touches that run's staging copy.
    """
    workspace: BackupWorkspace = context.resources.workspace
    tag_step_failure(context)
    target = requested_target(context.instance.get_run_by_id(context.run_id))
    RunDirectory.close_kept_open(Path(workspace.backup_dir), context.run_id)
    if TargetLock.holds(context.run_id):
        try:
            drop_staging(context.resources.vps.connection_info(), target)
        except Exception as error:  # noqa: BLE001 - cleanup must not hide the original failure
            context.log.warning(f"could not drop the staging database: {error_line(error)}")
    finish_run(context.run_id, context.job_name, workspace, "failure", target, failure_detail(context))
    report_outcome(context, success=False)
