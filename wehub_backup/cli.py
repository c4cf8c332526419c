"""``wehub-backup``: the plan's shell scripts as commands that run real, recorded Dagster runs.

``wehub-backup backup [TARGET_DB]`` mirrors ``backup_supabase_to_vps.sh [TARGET_DB]``: the
same job the schedule and the UI launch, recorded in the instance at ``$DAGSTER_HOME``.
"""

from __future__ import annotations

import argparse
import os
import sys

import dagster as dg

from wehub_backup.ops import BACKUP_JOB, TARGET_TAG
from wehub_backup.summary import format_summary, summarize_run


def run_backup(target: str) -> int:
    """Run the backup job against ``target`` and print its summary; the exit code says how it went."""
    from wehub_backup.definitions import backup_job_with_resources

    instance = _instance()
    result = dg.execute_job(
        dg.reconstructable(backup_job_with_resources),
        instance=instance,
        run_config={
            "ops": {"plan_supabase_backup": {"config": {"target_database": target}}},
            "loggers": {"console": {"config": {"log_level": "INFO"}}},
        },
        tags={TARGET_TAG: target, "wehub/launched_by": "cli"},
        raise_on_error=False,
    )
    summary = summarize_run(instance, result.run_id)
    print(format_summary(summary, os.environ.get("WEHUB_DAGSTER_URL", "http://localhost:3000")))
    return 0 if summary.success else 1


def _instance() -> dg.DagsterInstance:
    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit("wehub-backup: DAGSTER_HOME is not set (the directory of the Dagster instance, with dagster.yaml)")
    return dg.DagsterInstance.get()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wehub-backup", description="Verified Supabase <-> VPS database copies.")
    commands = parser.add_subparsers(dest="command", required=True)
    backup = commands.add_parser("backup", help=f"run {BACKUP_JOB}: Supabase -> a VPS database, verified")
    backup.add_argument("target", nargs="?", default=os.environ.get("WEHUB_BACKUP_TARGET_DB", "wehub_backup_test"),
                        help="VPS database to hold the copy (default: $WEHUB_BACKUP_TARGET_DB or wehub_backup_test)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "backup":
        return run_backup(args.target)
    return 2


if __name__ == "__main__":
    sys.exit(main())
