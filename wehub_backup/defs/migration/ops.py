"""The ops of the migration job: thin wrappers around ``wehub_backup.migration``'s steps that attach metadata."""

import dagster as dg

from wehub_backup.defs.failures import tag_step_failure
from wehub_backup.defs.lifecycle import (
    default_jobs,
    failure_detail,
    finish_run,
    lock_on_vps,
    requested_target,
    run_lock_keys,
    start_run,
)
from wehub_backup.defs.metadata import (
    dump_metadata,
    markdown_list,
    readable,
    run_process_usage,
    seconds,
    settings_text,
    table_summary,
)
from wehub_backup.defs.migration.config import MIGRATION_LOCK, MigrationConfig
from wehub_backup.defs.names import TARGET_TAG
from wehub_backup.defs.outcome import report_outcome
from wehub_backup.defs.resources import BackupWorkspace, PostgresDatabase
from wehub_backup.defs.steps import guarded_op
from wehub_backup.migration.plan import MigrationPlan, plan_migration
from wehub_backup.migration.restore import MigrationRestore, restore_in_one_transaction
from wehub_backup.migration.verify import MigrationVerification, verify_supabase
from wehub_backup.pg.dump import DumpResult, dump_source


@guarded_op(tags={"kind": "preflight"})
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
    directories = start_run(context, workspace, supabase_info.describe(), f"source={vps_info.dbname}")
    context.instance.add_run_tags(context.run_id, {TARGET_TAG: supabase_info.describe()})
    for key, name in zip(run_lock_keys(context.run_id), (MIGRATION_LOCK, vps_info.dbname)):
        lock_on_vps(vps_info, key, name)
    plan = plan_migration(
        vps_info, supabase_info, directories.work, secrets_dir=directories.secrets, overwrite=config.overwrite,
        app_schemas=config.app_schemas, excluded_tables=config.excluded_tables, extra_bindirs=workspace.extra_bindirs(),
        jobs=config.parallel_jobs or default_jobs(), log=context.log.warning,
        new_project=config.new_project, with_users=config.with_users,
    )
    context.add_output_metadata(readable({
        "source_database": plan.source_database,
        "vps_server_version": plan.source.version,
        "supabase_server_version": plan.target_server.version,
        "pg_dump": f"{plan.client.version} ({plan.client.bindir})",
        "app_schemas": markdown_list(plan.app_schemas),
        "replaced_on_supabase": markdown_list(plan.existing_schemas),
        "overwrite": plan.overwrite,
        "new_project": plan.new_project,
        "owners_on_supabase": f"{plan.target_server.current_user} (on the VPS: {', '.join(plan.owners_replaced) or '-'})",
        "extension_references_rewritten": markdown_list(
            [f"{r.extension}: {r.source_schema} -> {r.target_schema}" for r in plan.relocations]),
        "created_outside_app_schemas": markdown_list([r.description for r in plan.recreated]),
        "rows_carried": markdown_list([f"{c.qualified}: {c.rows}" for c in plan.carried_tables]),
        "left_out": markdown_list([str(item) for item in plan.left_out]),
        "restore_session_settings": settings_text(plan.restore_settings),
    }))
    return plan


@guarded_op
def dump_vps_database(
    context: dg.OpExecutionContext, plan: MigrationPlan, vps: PostgresDatabase, workspace: BackupWorkspace
) -> DumpResult:
    """pg_dump of the app schemas from a held snapshot, fingerprinted in the same snapshot."""
    dump = dump_source(plan.dump_request(), vps.connection_info(), context.log.info,
                       low_priority=workspace.low_priority)
    context.add_output_metadata(readable(dump_metadata(dump, workspace)))
    return dump


@guarded_op
def restore_into_supabase(
    context: dg.OpExecutionContext, plan: MigrationPlan, dump: DumpResult, vps: PostgresDatabase,
    supabase: PostgresDatabase, workspace: BackupWorkspace,
) -> MigrationRestore:
    """Empty the app schemas and restore them in one transaction: on any error Supabase stays as it was."""
    restored = restore_in_one_transaction(plan, dump, vps.connection_info(), supabase.connection_info(),
                                          context.log.info, low_priority=workspace.low_priority)
    context.add_output_metadata(readable({
        "bytes_sent_to_supabase": restored.bytes_sent,
        "duration_s": seconds(restored.seconds),
        "references_rewritten": restored.rewritten_references,
        "privileges_left_out": markdown_list(restored.privileges_left_out),
        "psql_peak_rss_bytes": restored.psql.peak_rss_bytes,
        "psql_cpu_s": seconds(restored.psql.cpu_seconds),
    }))
    return restored


@guarded_op
def verify_supabase_copy(
    context: dg.OpExecutionContext, plan: MigrationPlan, dump: DumpResult, restored: MigrationRestore,
    supabase: PostgresDatabase,
) -> MigrationVerification:
    """Rows and content digests, sequences and object counts against the VPS snapshot; sequences past their columns."""
    verified = verify_supabase(plan, dump, restored, supabase.connection_info())
    context.add_output_metadata(readable({
        "duration_s": seconds(verified.seconds),
        "tables_verified": verified.tables,
        "rows_verified": verified.rows,
        "sequences_checked": verified.sequences_checked,
        "rows_carried_verified": verified.rows_carried,
        "object_counts": dg.MetadataValue.json(verified.fingerprint.object_counts),
        "per_table": table_summary(verified.fingerprint),
    }))
    return verified


@guarded_op
def cleanup_migration_files(
    context: dg.OpExecutionContext, plan: MigrationPlan, verified: MigrationVerification,
    supabase: PostgresDatabase, workspace: BackupWorkspace,
) -> None:
    """Remove the run's working files and release its locks; log the success line."""
    finish_run(context.run_id, context.job_name, workspace, "success",
               supabase.connection_info().describe(), f"source={plan.source_database} rows={verified.rows}")
    report_outcome(context, success=True)
    context.add_output_metadata(readable(run_process_usage()))


@dg.failure_hook(required_resource_keys={"workspace"})
def clean_up_failed_migration(context: dg.HookContext) -> None:
    """On failure: remove working files, release the locks, log the cause.

    Supabase needs no cleaning: the restore's single transaction either committed whole or
    left nothing behind.
    """
    workspace: BackupWorkspace = context.resources.workspace
    tag_step_failure(context)
    finish_run(context.run_id, context.job_name, workspace, "failure",
               requested_target(context.instance.get_run_by_id(context.run_id)), failure_detail(context))
    report_outcome(context, success=False)
