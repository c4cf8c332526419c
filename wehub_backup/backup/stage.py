"""Stage: the marked ``<target>__staging`` database a copy is restored into: empty, or for an
incremental run a file copy of the current copy; the target and ``__previous`` are never
changed here."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from wehub_backup.backup.plan import BackupPlan
from wehub_backup.errors import StagingReplaced
from wehub_backup.pg.connection import MAINTENANCE_DATABASE, ConnectionInfo, error_line
from wehub_backup.pg.databases import copy_database, create_database, database_oid, drop_database
from wehub_backup.pg.dump import DumpResult
from wehub_backup.preflight import connect_or_explain
from wehub_backup.run.log import Log
from wehub_backup.run.marks import Mark, MarkState, check_replaceable, drop_if_marked, write_mark
from wehub_backup.run.targets import retired_name, staging_name


@dataclass(frozen=True)
class StagingDatabase:
    name: str
    oid: int  # the database this run created: the copy writes into no namesake made since (by a run that
    # took the lock this one lost)
    from_copy: bool = False  # a file copy of the current copy: only the changed chunks are written into it
    refusal: str = ""  # why an incremental run's staging is not such a copy


def recreate_staging(plan: BackupPlan, dump: DumpResult, vps: ConnectionInfo, log: Log) -> StagingDatabase:
    """Drop what earlier runs left (staging, ``__retired``) and create the staging database: for an
    incremental run a file copy of the current copy where ``in_place_refusal`` finds nothing against
    it and no session is connected to the copy, else an empty one.

    CREATE DATABASE cannot run in a transaction, so the mark follows one statement later: a
    crash between the two leaves an unmarked database, which the next run refuses to
    drop (naming it, with the way to adopt it) rather than guess whose it is.
    """
    refusal = in_place_refusal(plan, dump) if plan.base is not None else ""
    file_copy = plan.base is not None and not refusal
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        in_use = recreate_marked_staging(conn, plan.target, plan.copy_of, plan.source.encoding, plan.adopt,
                                         plan.target_server.major if file_copy else None)
        oid = database_oid(conn, plan.staging)
    if oid is None:
        raise StagingReplaced(f"{plan.staging} on the VPS was dropped as soon as this run created it; "
                              "nothing was written into it")
    if in_use:
        log(f"staging is not a file copy of {plan.target}: {in_use}")
    return StagingDatabase(plan.staging, oid, from_copy=file_copy and not in_use, refusal=refusal or in_use)


def recreate_marked_staging(conn: psycopg.Connection, target: str, copy_of: str, encoding: str, adopt: bool,
                            file_copy_major: int | None = None) -> str:
    """``recreate_staging`` for any copy of ``copy_of`` (a backup's, or an archive's being restored).

    With ``file_copy_major`` (the server's major version) staging is a file copy of the target, unless
    a session is connected to the target: then it is empty, and the reason is returned."""
    check_replaceable(conn, target, copy_of, adopt)
    for leftover in (staging_name(target), retired_name(target)):
        drop_database(conn, leftover)
    in_use = ""
    if file_copy_major is not None:
        try:
            copy_database(conn, staging_name(target), target, file_copy_major)
        except psycopg.errors.ObjectInUse as error:  # a session on the copy: build staging from the schema up
            in_use = f"the current copy is in use ({error_line(error)})"
    if file_copy_major is None or in_use:
        create_database(conn, staging_name(target), encoding)
    write_mark(conn, staging_name(target), Mark(MarkState.UNVERIFIED, copy_of))
    return in_use


def drop_staging(vps: ConnectionInfo, target: str) -> bool:
    """After a failure: the unverified staging copy goes if the project made it; the target is never touched."""
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        return drop_if_marked(conn, staging_name(target))


def in_place_refusal(plan: BackupPlan, dump: DumpResult) -> str:
    """Why an incremental run's staging cannot start as a file copy of the current copy ('' if it can).

    A file copy already holds every unchanged row, index and constraint, so only the changed chunks
    need writing; it is faithful only when the source's schema is the one the copy was made from
    (the digest of its schema script, recorded with the copy), nothing else in the archive carries
    rows, and the large objects are the same. Otherwise the run builds staging from the schema up.
    """
    base = plan.base
    assert base is not None
    if plan.source.major != plan.target_server.major:
        return "the source and the VPS differ in major version"
    if base.encoding != plan.source.encoding:
        return f"the current copy's encoding {base.encoding} is not the source's {plan.source.encoding}"
    if not base.large_objects or not base.large_objects.same_rows(dump.fingerprint.large_objects):
        return "the large objects changed"
    if dump.schema_digest != base.manifest.schema_digest:
        return "the schema changed since the current copy was made"
    if dump.archive_rows:
        return "the archive carries the rows of a table the copy does not stream"
    return ""
