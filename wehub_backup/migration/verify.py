"""Verify the migration: the app schemas on Supabase against the VPS snapshot, and sequences past their columns."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from wehub_backup.errors import VerificationFailed, first_of
from wehub_backup.migration import managed_tables
from wehub_backup.migration.plan import MigrationPlan
from wehub_backup.migration.queries import catalog_rows, read_query
from wehub_backup.migration.restore import MigrationRestore
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.dump import DumpResult
from wehub_backup.pg.fingerprint import DatabaseFingerprint, compare_fingerprints, fingerprint_database
from wehub_backup.preflight import connect_or_explain


@dataclass
class MigrationVerification:
    seconds: float
    tables: int
    rows: int
    sequences_checked: int
    rows_carried: int = 0
    fingerprint: DatabaseFingerprint = field(repr=False, default_factory=DatabaseFingerprint)


_OWNED_SEQUENCES = read_query("owned_sequences")


def verify_supabase(plan: MigrationPlan, dump: DumpResult, restored: MigrationRestore,
                    target: ConnectionInfo) -> MigrationVerification:
    """Fingerprint the app schemas on Supabase against the VPS snapshot; then make sure sequences continue.

    A sequence behind its column's maximum would make the application's next insert collide
    with a migrated row, so each column-owned sequence must lie beyond it. The rows carried
    into Supabase's own tables must equal the VPS copy's, and every trigger and policy created
    outside the app schemas must be there.
    """
    started = time.monotonic()
    with connect_or_explain(target, "Supabase") as conn:
        copy = fingerprint_database(conn, plan.app_schemas, plan.excluded_tables)
        problems = compare_fingerprints(dump.fingerprint, copy, dump.sequences_after)
        owned = catalog_rows(conn, _OWNED_SEQUENCES, schemas=plan.app_schemas)
        problems += [problem for row in owned if (problem := _sequence_problem(conn, row, copy.sequences))]
        carried = {c.qualified: c.digest(conn) for c in plan.carried_tables}
        problems += compare_fingerprints(DatabaseFingerprint(restored.carried_rows), DatabaseFingerprint(carried))
        found = set(managed_tables.present(conn, plan.recreated))
        problems += [f"{r.description}: missing on Supabase" for r in plan.recreated if r.description not in found]
    if problems:
        raise VerificationFailed(f"verification failed: {first_of(problems)}")
    return MigrationVerification(time.monotonic() - started, len(copy.tables), copy.total_rows, len(owned),
                                 sum(c.rows for c in carried.values()), copy)


def _sequence_problem(conn: psycopg.Connection, row: tuple, positions: dict[str, int]) -> str | None:
    schema, table, column, sequence, increment = row
    extreme = sql.SQL("max" if increment > 0 else "min")
    reached = conn.execute(sql.SQL("SELECT {}({}) FROM {}.{}").format(
        extreme, sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table))).fetchone()[0]
    upcoming = positions.get(sequence)
    if reached is None or upcoming is None:
        return None
    if (increment > 0 and upcoming <= reached) or (increment < 0 and upcoming >= reached):
        return (f"sequence {sequence} would next hand out {upcoming}, but {schema}.{table}.{column} "
                f"already holds {reached}: the next insert would collide")
    return None
