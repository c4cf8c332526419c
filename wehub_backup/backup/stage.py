"""Stage: the empty ``<target>__staging`` database a copy is restored into; the target is never touched."""

from __future__ import annotations

from wehub_backup.backup.plan import BackupPlan
from wehub_backup.pg.connection import MAINTENANCE_DATABASE, ConnectionInfo
from wehub_backup.pg.databases import create_database, drop_database
from wehub_backup.preflight import connect_or_explain
from wehub_backup.run.targets import staging_name


def recreate_staging(plan: BackupPlan, vps: ConnectionInfo) -> None:
    """Drop any leftover staging database and create an empty one (never touching the target)."""
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        drop_database(conn, plan.staging)
        create_database(conn, plan.staging, plan.source.encoding)


def drop_staging(vps: ConnectionInfo, target: str) -> bool:
    """After a failure: the unverified staging copy goes, the target is never touched."""
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        return drop_database(conn, staging_name(target))
