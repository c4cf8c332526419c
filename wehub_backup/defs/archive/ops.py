"""The archive ops: the backup job's archive step, the restore job's steps, the listing.

**Why an archive failure does not fail the backup run.** The run's outcome says whether the
VPS holds a verified copy; by the time the archive step runs it does (the swap has committed).
Dagster has no step outcome between success and failure, and a failed step fails its run, which
would alert as a failed backup and make the freshness sensor and the Runs list call a good copy
bad. A separate job launched by a sensor would run without the run's knowledge and without its
lock. So ``archive_verified_copy`` is a step of the run, between the swap and the cleanup: it
dumps the copy under the run's own lock (no other run can swap the copy away meanwhile) with the
run's own password directory, and catches its own failure: it logs it as an error on the step,
tags the run (``wehub/archive``), records an ``archive_failed`` engine event, and sends an alert
through the same channels and delivery as the failure sensor (``deliver_alert``), recording
where it went (``wehub/archive_alert``). It never fails, so the failure hook never sees it and
``cleanup_backup_files`` always runs after it, releasing the lock and writing the success line.
An off-site copy that failed is reported the same way and the next run uploads it again.
"""

from pathlib import Path

import dagster as dg

from wehub_backup.alerts.delivery import deliver_alert
from wehub_backup.alerts.messages import ArchiveAlert, run_url
from wehub_backup.archive.cycle import ArchiveCycle, archive_and_prune
from wehub_backup.archive.make import ArchiveRequest
from wehub_backup.archive.restore import (
    ArchiveRestorePlan,
    check_archive_request,
    check_vps_for_restore,
    restore_into_staging,
    unpack_verified,
    verify_restored,
)
from wehub_backup.archive.store import archive_line, list_archives
from wehub_backup.backup.plan import BackupPlan
from wehub_backup.backup.promote import PromoteResult, promote_copy
from wehub_backup.config import ArchiveSettings
from wehub_backup.defs.archive.config import ListArchivesConfig, RestoreArchiveConfig
from wehub_backup.defs.backup.config import PromoteConfig
from wehub_backup.defs.failures import cause_of, delivery_summary
from wehub_backup.defs.interrupts import interruptible_step
from wehub_backup.defs.lifecycle import default_jobs, finish_run, lock_on_vps, require_run_locks, start_run
from wehub_backup.defs.metadata import markdown_list, readable, seconds
from wehub_backup.defs.names import ARCHIVE_ALERT_TAG, ARCHIVE_TAG, TARGET_TAG
from wehub_backup.defs.resources import AlertSettings, ArchiveStore, BackupWorkspace, PostgresDatabase
from wehub_backup.defs.steps import guarded_op
from wehub_backup.errors import SettingsError
from wehub_backup.pg.clients import choose_client
from wehub_backup.run.locks import TargetLock
from wehub_backup.run.targets import previous_name

ARCHIVES_ASSET_KEY = dg.AssetKey(["vps_backup_archives"])


def archives_asset_spec() -> dg.AssetSpec:
    return dg.AssetSpec(
        key=ARCHIVES_ASSET_KEY,
        description="The history of verified copies in WEHUB_ARCHIVE_DIR: one zstd-compressed archive of the VPS copy "
        "after each successful backup, with a manifest (source, run, time, fingerprint, SHA-256), kept by the "
        "retention policy and optionally copied off-site. Materialized by archive_verified_copy, observed by "
        "list_backup_archives; restore_backup_archive restores one.",
        group_name="vps_backup_copies",
        kinds={"zstd"},
    )


@dg.op(ins={"promoted": dg.In(dg.Nothing)}, tags={"kind": "archive"})
def archive_verified_copy(context: dg.OpExecutionContext, plan: BackupPlan, vps: PostgresDatabase,
                          workspace: BackupWorkspace, alert_settings: AlertSettings, archives: ArchiveStore) -> bool:
    """Archive the copy just verified and swapped in; a failure alerts but leaves the backup a success.

    A plain ``dg.op``, not ``guarded_op``: a lost lock or a signal costs the archive, never the
    verified copy's run. Returns whether the archive was made (False also when archives are off).
    """
    try:
        settings = archives.settings()
        if not settings.enabled:
            context.log.info("archives are switched off (WEHUB_ARCHIVE=off)")
            return False
        with interruptible_step():
            require_run_locks(context)
            cycle = _archive_copy(context, plan, vps, workspace, settings)
    except Exception as error:  # noqa: BLE001 - reported below; the verified copy stands
        _report_problem(context, alert_settings, plan.target, "was not archived", error)
        return False
    _record_archive(context, cycle)
    if cycle.offsite_problem is not None:
        _report_problem(context, alert_settings, plan.target, "was archived but not copied off-site",
                        cycle.offsite_problem)
    return True


def _archive_copy(context: dg.OpExecutionContext, plan: BackupPlan, vps: PostgresDatabase,
                  workspace: BackupWorkspace, settings: ArchiveSettings) -> ArchiveCycle:
    """Dump the copy the run swapped in, while the run's lock still keeps other runs off it."""
    client = choose_client(plan.target_server.major, workspace.extra_bindirs())
    request = ArchiveRequest(plan.target, plan.copy_of, context.run_id, client, plan.source.encoding,
                             plan.kept_schemas, plan.excluded_tables, plan.catalog.roles, plan.secrets_dir)
    return archive_and_prune(request, vps.connection_info(), settings, context.log.info,
                             low_priority=workspace.low_priority)


def _record_archive(context: dg.OpExecutionContext, cycle: ArchiveCycle) -> None:
    manifest = cycle.manifest
    metadata = readable({
        "archive_id": manifest.id,
        "archive_bytes": manifest.archive_bytes,
        "dump_bytes": manifest.dump_bytes,
        "rows": manifest.rows,
        "sha256": manifest.sha256,
        "archives_kept": markdown_list([archive_line(archive, None) for archive in cycle.kept]),
        "pruned": markdown_list([str(item) for item in cycle.pruned]),
        "offsite": markdown_list([f"{u.archive}: {u.error or 'uploaded'}" for u in cycle.uploads]),
    })
    context.instance.add_run_tags(context.run_id, {ARCHIVE_TAG: f"made {manifest.id}"})
    context.add_output_metadata(metadata)
    context.log_event(dg.AssetMaterialization(
        asset_key=ARCHIVES_ASSET_KEY, description=f"Archive {manifest.id} of VPS database {manifest.database}",
        metadata=metadata))


def _report_problem(context: dg.OpExecutionContext, alert_settings: AlertSettings, target: str, problem: str,
                    error: BaseException) -> None:
    """Log, tag and alert; never raises (the backup run stays a success)."""
    cause = cause_of(error)
    context.log.error(f"the verified copy in {target} {problem}: {cause.summary} (the backup itself succeeded)")
    run = context.instance.get_run_by_id(context.run_id)
    alert = ArchiveAlert(context.job_name, context.run_id, context.op.name, target, problem, cause,
                         run_url(alert_settings.dagster_url, context.run_id))
    results = deliver_alert(alert, alert_settings.channels(), log=context.log)
    context.instance.add_run_tags(context.run_id, {ARCHIVE_TAG: f"{problem}: {cause.summary}",
                                                   ARCHIVE_ALERT_TAG: delivery_summary(results)})
    if run is not None:
        context.instance.report_engine_event(f"archive_failed: {problem}: {cause.summary}", run)


@guarded_op(tags={"kind": "preflight"})
def plan_archive_restore(context: dg.OpExecutionContext, config: RestoreArchiveConfig, vps: PostgresDatabase,
                         workspace: BackupWorkspace, archives: ArchiveStore) -> ArchiveRestorePlan:
    """Check the names, then the archive's SHA-256 while unpacking it; only then lock and check the VPS."""
    archive = check_archive_request(archives.settings().directory, config.archive_id, config.target_database)
    directories = start_run(context, workspace, config.target_database, f"archive={archive.id}")
    dump = unpack_verified(archive, directories.work)
    context.log.info(f"archive {archive.id}: SHA-256 matches its manifest")
    vps_info = vps.connection_info()
    lock_on_vps(vps_info, context.run_id, config.target_database)
    client, server = check_vps_for_restore(archive, config.target_database, config.replace_existing, vps_info,
                                           workspace.extra_bindirs())
    context.instance.add_run_tags(context.run_id, {TARGET_TAG: config.target_database})
    context.add_output_metadata(readable({
        "archive_id": archive.id, "archived_at": archive.manifest.created_at, "copy_of": archive.manifest.source,
        "target": config.target_database, "replace_existing": config.replace_existing,
        "archive_bytes": archive.manifest.archive_bytes, "rows_in_archive": archive.manifest.rows,
    }))
    return ArchiveRestorePlan(archive, config.target_database, config.replace_existing, dump, client, server,
                              directories.secrets, config.parallel_jobs or default_jobs())


@guarded_op
def restore_archive_into_staging(context: dg.OpExecutionContext, plan: ArchiveRestorePlan, vps: PostgresDatabase,
                                 workspace: BackupWorkspace) -> float:
    """Into a fresh marked ``<target>__staging``; any pg_restore error fails the step."""
    took = restore_into_staging(plan, vps.connection_info(), context.log.info, low_priority=workspace.low_priority)
    context.add_output_metadata({"staging_database": plan.staging, "duration_s": seconds(took)})
    return took


@guarded_op
def verify_archive_restore(context: dg.OpExecutionContext, plan: ArchiveRestorePlan, restored: float,
                           vps: PostgresDatabase) -> int:
    """Staging's fingerprint against the manifest's: row counts, digests, sequences, object counts."""
    tables, rows = verify_restored(plan, vps.connection_info())
    context.add_output_metadata(readable({"tables_verified": tables, "rows_verified": rows}))
    return rows


@guarded_op
def promote_restored_archive(context: dg.OpExecutionContext, config: PromoteConfig, plan: ArchiveRestorePlan,
                             rows: int, vps: PostgresDatabase) -> PromoteResult:
    """The backup's swap: a replaced target stays as ``<target>__previous``."""
    if config.on_connected_sessions not in ("wait", "terminate"):
        raise SettingsError(f"on_connected_sessions must be 'wait' or 'terminate', not {config.on_connected_sessions!r}")
    result = promote_copy(plan.target, plan.copy_of, vps.connection_info(), TargetLock.of(context.run_id),
                          config.on_connected_sessions,  # type: ignore[arg-type]
                          config.connected_sessions_timeout_seconds)
    context.add_output_metadata(readable({
        "target": plan.target, "archive_id": plan.archive.id, "rows": rows,
        "previous_kept_as": previous_name(plan.target) if result.previous_kept else "(new database)",
        "sessions_terminated": result.sessions_terminated,
    }))
    return result


@guarded_op
def cleanup_archive_restore(context: dg.OpExecutionContext, plan: ArchiveRestorePlan, promoted: PromoteResult,
                            workspace: BackupWorkspace) -> None:
    """Remove the unpacked dump, release the lock, log the success line."""
    finish_run(context.run_id, context.job_name, workspace, "success", plan.target, f"archive={plan.archive.id}")
    context.log.info(f"archive {plan.archive.id} restored into VPS database {plan.target} and verified")


@dg.op(tags={"kind": "archive"})
def list_archives_step(context: dg.OpExecutionContext, config: ListArchivesConfig, archives: ArchiveStore) -> list[str]:
    """One line per archive, ID first (as ``wehub-backup archives`` prints them), on the archives asset too."""
    lines = archive_listing(archives.settings().directory, config.verify_checksums)
    for line in lines:
        context.log.info(line)
    context.log_event(dg.AssetObservation(asset_key=ARCHIVES_ASSET_KEY, metadata={
        "archives": len(lines), "listing": markdown_list(lines)}))
    return lines


def archive_listing(directory: Path, verify_checksums: bool) -> list[str]:
    return [archive_line(archive, archive.checksum_ok() if verify_checksums else None)
            for archive in list_archives(directory)]
