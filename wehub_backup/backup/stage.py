"""Stage: the empty, marked ``<target>__staging`` database a copy is restored into; the target
and ``__previous`` are never touched here."""

from __future__ import annotations

from wehub_backup.backup.plan import BackupPlan
from wehub_backup.pg.connection import MAINTENANCE_DATABASE, ConnectionInfo
from wehub_backup.pg.databases import create_database, drop_database
from wehub_backup.preflight import connect_or_explain
from wehub_backup.run.marks import Mark, MarkState, check_replaceable, drop_if_marked, write_mark
from wehub_backup.run.targets import retired_name, staging_name


def recreate_staging(plan: BackupPlan, vps: ConnectionInfo) -> None:
    """Drop what earlier runs left (staging, ``__retired``) and create an empty staging database.

    CREATE DATABASE cannot run in a transaction, so the mark follows one statement later: a
    crash between the two leaves an empty unmarked database, which the next run refuses to
    drop (naming it, with the way to adopt it) rather than guess whose it is.
    """
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        check_replaceable(conn, plan.target, plan.copy_of, plan.adopt)
        for leftover in (plan.staging, retired_name(plan.target)):
            drop_database(conn, leftover)
        create_database(conn, plan.staging, plan.source.encoding)
        write_mark(conn, plan.staging, Mark(MarkState.UNVERIFIED, plan.copy_of))


def drop_staging(vps: ConnectionInfo, target: str) -> bool:
    """After a failure: the unverified staging copy goes if the project made it; the target is never touched."""
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        return drop_if_marked(conn, staging_name(target))
