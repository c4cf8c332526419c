"""``wehub-backup``: the plan's shell scripts as commands that run real, recorded Dagster runs.

``wehub-backup backup [--adopt] [TARGET_DB]`` mirrors ``backup_supabase_to_vps.sh [TARGET_DB]``:
the same job the schedule and the UI launch, recorded in the instance at ``$DAGSTER_HOME``.
``wehub-backup migrate [--overwrite] [--new-project [--with-users]]`` mirrors ``migrate_to_supabase.sh`` the
same way. Each run is recorded as a run of the code location's job, like one launched from the UI:
it is listed on the job's page and the timeline, and the UI can re-execute it.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import BinaryIO, NoReturn

import dagster as dg
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.workspace.load import location_origin_from_module_name

from wehub_backup.config import BACKUP_MODES, configured_backup_target, dagster_home, dagster_url
from wehub_backup.defs.backup.config import backup_run_config
from wehub_backup.defs.egress import egress_usage, format_egress_report, last_successful_egress
from wehub_backup.defs.migration.config import migration_run_config
from wehub_backup.defs.names import (
    BACKUP_JOB,
    CODE_LOCATION,
    DEFINITIONS_MODULE,
    LAUNCHED_BY_TAG,
    MIGRATION_JOB,
    REPOSITORY,
    RESTORE_ARCHIVE_JOB,
    TARGET_TAG,
)
from wehub_backup.errors import SettingsError
from wehub_backup.files import open_private, private_umask
from wehub_backup.summary import format_summary, summarize_run

# How long a command waits for another to finish opening the Dagster instance: that takes seconds,
# so one that holds its turn this long is stuck.
INSTANCE_LOCK_WAIT_S = 120.0
INSTANCE_LOCK_POLL_S = 0.1


def run_backup(target: str, adopt: bool = False, mode: str = "") -> int:
    """Run the backup job against ``target`` (in ``mode``, else the configured one) and print its
    summary; the exit code says how it went."""
    from wehub_backup.definitions import backup_job_with_resources

    return _run_recorded(backup_job_with_resources, backup_run_config(target, adopt, mode), {TARGET_TAG: target})


def run_migration(overwrite: bool, new_project: bool = False, with_users: bool = False) -> int:
    """Run the migration job ($LOCAL_DB_NAME -> Supabase) and print its summary; the exit code says how it went."""
    from wehub_backup.definitions import migration_job_with_resources

    return _run_recorded(migration_job_with_resources, migration_run_config(overwrite, new_project, with_users), {})


def _run_recorded(job_factory: Callable[[], dg.JobDefinition], run_config: dict, tags: dict[str, str]) -> int:
    """Execute a job in this process, recorded in the instance at $DAGSTER_HOME, and print its summary."""
    with _instance() as instance:
        run_id = execute_as_location_run(
            instance, dg.reconstructable(job_factory),
            {**run_config, "loggers": {"console": {"config": {"log_level": "INFO"}}}},
            {**tags, LAUNCHED_BY_TAG: "cli"},
        )
        summary = summarize_run(instance, run_id)
    print(format_summary(summary, dagster_url()))
    return 0 if summary.success else 1


def execute_as_location_run(
    instance: dg.DagsterInstance, job: dg.ReconstructableJob, run_config: dict, tags: dict[str, str]
) -> str:
    """Create the run as a run of the code location's job, then execute it here; return its id.

    ``dg.execute_job`` records a run without a code-location origin: the UI leaves it off the
    job's page and cannot re-execute it. The origin is the one workspace.yaml gives the
    webserver and the daemon (module, location and repository name), built without starting a
    code server, so the command keeps running the job in its own process.
    """
    job_def = job.get_definition()
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=run_config,
        tags={**job_def.run_tags, **tags},
        remote_job_origin=location_job_origin(job_def.name),
        job_code_origin=job.get_python_origin(),
        repository_load_data=job.repository.get_definition().repository_load_data,
    )
    execute_run(job, run, instance)
    return run.run_id


def location_job_origin(job_name: str) -> RemoteJobOrigin:
    """Where the webserver finds ``job_name``: the workspace's code location and its one repository."""
    location = location_origin_from_module_name(DEFINITIONS_MODULE, None, None, CODE_LOCATION, sys.executable)
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, REPOSITORY), job_name)


def run_archive_restore(archive_id: str, target: str, replace: bool) -> int:
    """Run the restore job (an archive -> a VPS database, verified) and print its summary."""
    from wehub_backup.definitions import restore_archive_job_with_resources
    from wehub_backup.defs.archive.config import restore_archive_run_config

    return _run_recorded(restore_archive_job_with_resources, restore_archive_run_config(archive_id, target, replace),
                         {TARGET_TAG: target})


def list_archives(verify_checksums: bool) -> int:
    """Print one line per archive, its ID first (what ``restore-archive`` takes)."""
    from wehub_backup.defs.archive.ops import archive_listing
    from wehub_backup.defs.resources import archive_settings_from_env

    try:
        directory = archive_settings_from_env().directory
    except SettingsError as error:
        raise SystemExit(f"wehub-backup: {error}") from None
    lines = archive_listing(directory, verify_checksums)
    print("\n".join(lines) if lines else f"no archives in {directory}")
    return 0


def report_egress() -> int:
    """Print the billing cycle's Supabase egress against the budget, from the instance's run records."""
    with _instance() as instance:
        try:
            usage = egress_usage(instance)
        except SettingsError as error:
            raise SystemExit(f"wehub-backup: {error}") from None
        print(format_egress_report(usage, last_successful_egress(instance, BACKUP_JOB),
                                   last_successful_egress(instance, BACKUP_JOB, "incremental")))
    return 0


def _instance(wait_seconds: float = INSTANCE_LOCK_WAIT_S) -> dg.DagsterInstance:
    """The instance at ``$DAGSTER_HOME``, opened by one command at a time.

    Opening a new SQLite instance creates and migrates its storage; two commands started
    together (the schedule and an operator, say) would otherwise race on that. Opening takes
    seconds, so a command that has held the lock for ``wait_seconds`` is stuck, and this one
    says so instead of waiting behind it for ever.
    """
    home = dagster_home()
    if home is None:
        raise SystemExit("wehub-backup: DAGSTER_HOME is not set (the directory of the Dagster instance, with dagster.yaml)")
    path = home / ".wehub-backup.lock"
    with open_private(path, append=True) as lock:
        deadline = time.monotonic() + wait_seconds
        while not _try_lock(lock):
            if time.monotonic() >= deadline:
                raise SystemExit(f"wehub-backup: another wehub-backup command has been opening the Dagster instance "
                                 f"at {home} for {wait_seconds:.0f}s (it holds {path}); this command changed nothing "
                                 "(end that command, or run this one again once it is done)")
            time.sleep(INSTANCE_LOCK_POLL_S)
        return dg.DagsterInstance.get()


def _try_lock(lock: BinaryIO) -> bool:
    """Whether this process now holds ``lock`` exclusively."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wehub-backup", description="Verified Supabase <-> VPS database copies.")
    commands = parser.add_subparsers(dest="command", required=True)
    backup = commands.add_parser("backup", help=f"run {BACKUP_JOB}: Supabase -> a VPS database, verified")
    backup.add_argument("target", nargs="?", default=configured_backup_target(),
                        help="VPS database to hold the copy (default: $WEHUB_BACKUP_TARGET_DB or wehub_backup_test)")
    backup.add_argument("--adopt", action="store_true",
                        help="let this run replace TARGET_DB (and drop its __staging/__previous/__retired) although "
                             "they are not marked as this project's copies of this source, e.g. copies made before "
                             "copies were marked")
    backup.add_argument("--mode", choices=BACKUP_MODES, default="",
                        help="full, or incremental: only the chunks changed since the verified copy (full when "
                             "that copy cannot be built on); default: $WEHUB_BACKUP_MODE or full")
    migrate = commands.add_parser("migrate", help=f"run {MIGRATION_JOB}: the VPS database ($LOCAL_DB_NAME) -> "
                                                  "Supabase, in one transaction, verified")
    migrate.add_argument("--overwrite", action="store_true",
                         help="replace app schemas that already hold objects on Supabase (returning after a failover)")
    migrate.add_argument("--new-project", action="store_true",
                         help="Supabase is a new project (the original is lost): also create the VPS copy's triggers "
                              "and policies on auth/storage tables, and its storage buckets")
    migrate.add_argument("--with-users", action="store_true",
                         help="with --new-project: carry the VPS copy's users (auth.users, auth.identities) too")
    archives = commands.add_parser("archives", help="list the archives of verified copies, one line each: ID, time, "
                                                    "size, rows, checksum")
    archives.add_argument("--no-verify", action="store_true", help="do not read each archive to check its SHA-256")
    restore = commands.add_parser("restore-archive", help=f"run {RESTORE_ARCHIVE_JOB}: an archive -> a new VPS "
                                                          "database, checksum and fingerprint verified")
    restore.add_argument("archive_id", help="the archive's ID, as wehub-backup archives lists it")
    restore.add_argument("database", help="the VPS database to restore into (new, unless --replace)")
    restore.add_argument("--replace", action="store_true",
                         help="replace DATABASE, a copy this project made of the same source, through staging -> "
                              "verify -> swap; the old copy stays as DATABASE__previous")
    commands.add_parser("doctor", help="check this machine before the first run: programs, password file, "
                                       "directories, both databases, Dagster storage; prints what to fix")
    commands.add_parser("egress", help="Supabase egress this billing cycle: used, budget, runs, projection")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "backup":
        return run_backup(args.target, args.adopt, args.mode)
    if args.command == "migrate":
        if args.with_users and not args.new_project:
            parser.error("--with-users carries users into a new project: add --new-project")
        return run_migration(args.overwrite, args.new_project, args.with_users)
    if args.command == "doctor":
        from wehub_backup.doctor import run_doctor

        return run_doctor()
    if args.command == "egress":
        return report_egress()
    if args.command == "archives":
        return list_archives(not args.no_verify)
    if args.command == "restore-archive":
        return run_archive_restore(args.archive_id, args.database, args.replace)
    return 2


def run_command() -> NoReturn:
    """The ``wehub-backup`` command: ``main``, then an exit that skips the interpreter's teardown.

    By the time ``main`` returns, the run is committed to the instance's storage and the
    summary printed; unloading Dagster's modules would add about 0.6 s to every command
    (part of the job's overhead in the benchmark) and change nothing.

    Before anything, the umask becomes private: Dagster creates its files in ``DAGSTER_HOME``
    (SQLite storage, compute logs) with the process's umask, which the operator's shell sets.
    """
    private_umask()
    try:
        code = main()
    except SystemExit as stop:
        code = _exit_code(stop)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _exit_code(stop: SystemExit) -> int:
    """What the interpreter would make of ``stop``: an int as it is; a message printed, then 1."""
    if stop.code is None or isinstance(stop.code, int):
        return stop.code or 0
    print(stop.code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    run_command()
