"""Verify: fingerprint staging and compare it with the source snapshot."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from wehub_backup.backup.increment import cut_bounds
from wehub_backup.backup.plan import BackupPlan
from wehub_backup.errors import VerificationFailed, first_of
from wehub_backup.pg.chunks import ChunkBounds
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.dump import DumpResult
from wehub_backup.pg.fingerprint import DatabaseFingerprint, compare_fingerprints, fingerprint_database
from wehub_backup.preflight import connect_or_explain
from wehub_backup.run.manifest import forget_copy


@dataclass
class VerificationResult:
    seconds: float
    tables: int
    rows: int
    fingerprint: DatabaseFingerprint = field(repr=False, default_factory=DatabaseFingerprint)
    bounds: dict[str, ChunkBounds] = field(repr=False, default_factory=dict)  # staging's tables were digested at


def verify_staging(plan: BackupPlan, dump: DumpResult, vps: ConnectionInfo) -> VerificationResult:
    """Fingerprint staging and compare with the source snapshot; raise on any difference.

    The keyed tables are digested chunk by chunk (their sums are the table digests compared), at
    the bounds the run's source was cut at where there were any, else at fresh ones: recorded with
    the copy, they spare the next incremental run a reading of all of it."""
    started = time.monotonic()
    with connect_or_explain(vps, "the VPS server", plan.staging) as conn:
        bounds = cut_bounds(conn, plan.kept_schemas, plan.scope.excluded_tables, dump.fingerprint.chunks, plan.base)
        copy = fingerprint_database(conn, plan.kept_schemas, plan.scope.excluded_tables,
                                    large_objects=True, chunked=bounds)
    problems = compare_fingerprints(dump.fingerprint, copy, dump.sequences_after)
    if problems:
        if plan.manifest_file is not None:  # the next run must not build on what this one could not verify
            forget_copy(plan.manifest_file)
        raise VerificationFailed(f"verification failed: {first_of(problems)}")
    return VerificationResult(time.monotonic() - started, len(copy.tables), copy.total_rows, copy, bounds)
