"""Stage: the empty, marked ``<target>__staging`` database a copy is restored into; the target
and ``__previous`` are never touched here."""

from __future__ import annotations

import psycopg

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
        recreate_marked_staging(conn, plan.target, plan.copy_of, plan.source.encoding, plan.adopt)


def recreate_marked_staging(conn: psycopg.Connection, target: str, copy_of: str, encoding: str, adopt: bool) -> None:
    """``recreate_staging`` for any copy of ``copy_of`` (a backup's, or an archive's being restored)."""
    check_replaceable(conn, target, copy_of, adopt)
    for leftover in (staging_name(target), retired_name(target)):
        drop_database(conn, leftover)
    create_database(conn, staging_name(target), encoding)
    write_mark(conn, staging_name(target), Mark(MarkState.UNVERIFIED, copy_of))


def drop_staging(vps: ConnectionInfo, target: str) -> bool:
    """After a failure: the unverified staging copy goes if the project made it; the target is never touched."""
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        return drop_if_marked(conn, staging_name(target))
