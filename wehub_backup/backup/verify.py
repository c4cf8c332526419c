"""Verify: fingerprint staging and compare it with the source snapshot."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg

from wehub_backup.backup.increment import IncrementBase, cut_bounds, table_bounds
from wehub_backup.backup.plan import BackupPlan
from wehub_backup.errors import VerificationFailed, first_of
from wehub_backup.pg.chunks import ChunkBounds, chunk_keys
from wehub_backup.pg.connection import ConnectionInfo, cancelled_when_set
from wehub_backup.pg.digests import DigestedTable, TableFingerprint, TakenDigests, set_stable_output, table_digests
from wehub_backup.pg.dump import DumpResult
from wehub_backup.pg.fingerprint import DatabaseFingerprint, compare_fingerprints, fingerprint_database, with_tables
from wehub_backup.pg.snapshot import held_table_lock_wait_s
from wehub_backup.pg.stream import LostConnectionRetries, gave_way, require_created_staging
from wehub_backup.pg.streamed_tables import StreamedTable
from wehub_backup.preflight import connect_or_explain
from wehub_backup.run.manifest import forget_copy


@dataclass
class VerificationResult:
    seconds: float
    tables: int
    rows: int
    fingerprint: DatabaseFingerprint = field(repr=False, default_factory=DatabaseFingerprint)
    bounds: dict[str, ChunkBounds] = field(repr=False, default_factory=dict)  # staging's tables were digested at


def verify_staging(plan: BackupPlan, dump: DumpResult, vps: ConnectionInfo,
                   landed: DigestsAsTablesLand | None = None) -> VerificationResult:
    """Fingerprint staging and compare with the source snapshot; raise on any difference.

    The keyed tables are digested chunk by chunk (their sums are the table digests compared), at
    the bounds the run's source was cut at where there were any, else at fresh ones: recorded with
    the copy, they spare the next incremental run a reading of all of it. The tables ``landed`` holds
    were digested as their rows landed, on either side, and are not read again; a table whose source
    digest the dump left to the copy and the copy did not take fails the verification."""
    started = time.monotonic()
    taken = landed.of_staging if landed else {}
    with connect_or_explain(vps, "the VPS server", plan.staging) as conn:
        bounds = cut_bounds(conn, plan.kept_schemas, plan.scope.excluded_tables, dump.fingerprint.chunks, plan.base,
                            skipped=taken.keys())
        copy = fingerprint_database(conn, plan.kept_schemas, plan.scope.excluded_tables,
                                    large_objects=True, chunked=bounds, taken=taken)
    bounds.update({name: digests.bounds for name, digests in taken.items() if digests.bounds is not None})
    of_source = landed.of_source if landed else {}
    owed = sorted(dump.held.digests_owed - of_source.keys()) if dump.held else []
    problems = [f"table {name}: its digest on the source was not taken during the copy" for name in owed]
    problems += compare_fingerprints(with_tables(dump.fingerprint, of_source), copy, dump.sequences_after)
    if problems:
        if plan.manifest_file is not None:  # the next run must not build on what this one could not verify
            forget_copy(plan.manifest_file)
        raise VerificationFailed(f"verification failed: {first_of(problems)}")
    return VerificationResult(time.monotonic() - started, len(copy.tables), copy.total_rows, copy, bounds)


@dataclass
class DigestsAsTablesLand:
    """Both sides' digests of a large table taken by the copy worker that landed its rows, while the
    other tables still copy, so neither the dump step nor the verification step reads it.

    A table's rows are final once its last range is committed (the archive carries none of them, and
    the post-data section adds indexes, constraints and triggers, not rows), and so is its digest
    unless another table inherits it (its digest reads their rows too); its key is final once its
    own indexes are built (``keys_final``: None, they are built after the copy), so staging's chunks
    are cut by the key the copy will have. The source's digest is read in the held snapshot, in a
    session of its own, and again after its connection dropped (``retries``), as a range is; the dump
    left it owed (``HeldSnapshot.digests_owed``)."""

    retries: LostConnectionRetries  # of the held snapshot
    vps: ConnectionInfo
    staging: str
    staging_oid: int  # the database the run created: a namesake made since is not read
    from_bytes: int  # staging's digest is taken of tables at least this large
    source_chunks: Mapping[str, Mapping[int, TableFingerprint]]
    base: IncrementBase | None
    keys_final: Callable[[StreamedTable], bool] | None
    log: Callable[[str], None]
    of_staging: dict[str, TakenDigests] = field(default_factory=dict)
    of_source: dict[str, TableFingerprint] = field(default_factory=dict)
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def source_side(self, table: StreamedTable, stopping: threading.Event) -> None:
        """The source's digest of ``table``, where the dump left it owed."""
        held = self.retries.held
        if table.qualified not in held.digests_owed or stopping.is_set():
            return
        started = time.monotonic()
        digest = self.retries.run(lambda: self._source_digest(table, stopping), stopping,
                                  f"digest of {table.qualified} on the source", "reading it again")
        self._took(table, "on the source", started, lambda: self.of_source.update({table.qualified: digest}))

    def _source_digest(self, table: StreamedTable, stopping: threading.Event) -> TableFingerprint:
        held = self.retries.held
        with held.imported() as conn:
            set_stable_output(conn)
            try:
                with _stoppable(conn, stopping, f"{table.qualified} was digested on the source"):
                    [parts] = table_digests(conn, [DigestedTable(table.schema, table.name, table.size_bytes)])
            except psycopg.errors.LockNotAvailable as error:
                raise gave_way(held, table, "the verification's reading of it", "the source",
                               held_table_lock_wait_s(held.source.lock_timeout_s)) from error
        return parts[None]

    def staging_side(self, table: StreamedTable, stopping: threading.Event) -> None:
        """Staging's digest of ``table``, unless it is small, or its key or (inherited) its digest may still change."""
        if table.size_bytes < self.from_bytes or table.inherited or self.keys_final is None \
                or not self.keys_final(table) or stopping.is_set():
            return
        started = time.monotonic()
        with connect_or_explain(self.vps, "the VPS server", self.staging) as conn:
            require_created_staging(conn, self.staging, self.staging_oid)
            set_stable_output(conn)
            with _stoppable(conn, stopping, f"{table.qualified} was digested in staging"):
                bounds = table_bounds(conn, table, chunk_keys(conn, [table.schema]).get(table.qualified),
                                      self.source_chunks, self.base)
                [parts] = table_digests(conn, [DigestedTable(table.schema, table.name, table.size_bytes, bounds)])
        self._took(table, "in staging", started,
                   lambda: self.of_staging.update({table.qualified: TakenDigests(bounds, parts)}))

    def _took(self, table: StreamedTable, where: str, started: float, keep: Callable[[], None]) -> None:
        seconds = time.monotonic() - started
        self.log(f"{table.qualified}: digested {where} as soon as its rows were in ({seconds:.1f} s)")
        with self._lock:
            keep()
            self.seconds += seconds


@contextmanager
def _stoppable(conn: psycopg.Connection, stopping: threading.Event, what: str) -> Iterator[None]:
    """``conn``'s statements cancelled once ``stopping`` is set, which the error then says."""
    try:
        with cancelled_when_set(conn, stopping):
            yield
    except psycopg.errors.QueryCanceled as error:
        if stopping.is_set():
            raise psycopg.OperationalError(f"the copy was stopped while {what}") from error
        raise
