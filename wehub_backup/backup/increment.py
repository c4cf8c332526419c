"""Incremental backups: staging built from the current verified copy, with only what changed fetched.

The run reads the current copy on the VPS first (at no egress): each table's definition, its
chunk bounds and the count and digest of every chunk, or of the whole table where it has no
usable key. The source computes the same chunk digests in the run's snapshot, beside the dump
of the schema, and their sums are its table digests, so the verification is the full one of
every run. Where the schema is unchanged, staging is a file copy of the current copy and only
the changed chunks are written into it (``stage.recreate_staging``); otherwise the copy takes each
unchanged chunk from the current copy and each changed one from the snapshot, and a table that
is new or whose columns changed comes whole from the source.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import psycopg

from wehub_backup.config import FULL_EVERY_DAYS_ENV
from wehub_backup.pg.chunks import (
    ChunkBounds,
    ChunkKey,
    by_key_ranges,
    chunk_bounds,
    chunk_keys,
    keys_inside_chunks,
    split_crowded_chunks,
)
from wehub_backup.pg.connection import MAINTENANCE_DATABASE, ConnectionInfo
from wehub_backup.pg.databases import database_oid
from wehub_backup.pg.digests import (
    DigestedTable,
    TableFingerprint,
    large_object_fingerprint,
    set_stable_output,
    summed,
    table_digests,
)
from wehub_backup.pg.fingerprint import DatabaseFingerprint
from wehub_backup.pg.streamed_tables import CopyRange, StreamedTable, copy_ranges, streamed_tables
from wehub_backup.preflight import connect_or_explain
from wehub_backup.run.manifest import CopyManifest, RecordedTable, read_manifest

FULL, INCREMENTAL = "full", "incremental"
T = TypeVar("T")


@dataclass(frozen=True)
class CopiedTable:
    """A table of the current copy as the incremental run compares it with the source."""

    definition: tuple[str, ...]
    whole: TableFingerprint
    bounds: ChunkBounds | None = None  # None: no usable key, compared whole
    chunks: Mapping[int, TableFingerprint] = field(default_factory=dict)


@dataclass
class IncrementBase:
    """The current verified copy an incremental run starts from, read on the VPS."""

    manifest: CopyManifest
    tables: dict[str, CopiedTable]
    seconds: float
    encoding: str = ""
    large_objects: TableFingerprint | None = None

    def chunked(self) -> dict[str, ChunkBounds]:
        """Each keyed table's bounds: the source cuts its chunks at the same keys."""
        return {name: table.bounds for name, table in self.tables.items() if table.bounds is not None}


@dataclass(frozen=True)
class ModeDecision:
    mode: str
    reason: str  # why: what was asked, or what made an incremental run full


def decide_mode(requested: str, manifest: CopyManifest | None, target_oid: int | None, copy_of: str,
                adopted: bool, full_every: timedelta, now: datetime | None = None) -> ModeDecision:
    """Incremental only when asked and the current copy can be trusted as its base: recorded as
    verified, of this source, still the same database, and its full copy recent enough."""
    if requested == FULL:
        return ModeDecision(FULL, "a full copy was asked for")
    now = now or datetime.now(UTC)
    if adopted or target_oid is None:
        why = "the target was adopted" if adopted else "there is no copy yet"
    elif manifest is None:
        why = "no record of a verified copy (first incremental run, or the last verification failed)"
    elif manifest.source != copy_of:
        why = f"the recorded copy is of {manifest.source}, not of {copy_of}"
    elif manifest.database_oid != target_oid:
        why = "the target is not the database the record was written for (replaced since)"
    elif manifest.full_age(now) >= full_every:
        why = (f"the last full copy is {manifest.full_age(now).days} days old ({FULL_EVERY_DAYS_ENV}="
               f"{full_every.days})")
    else:
        return ModeDecision(INCREMENTAL, f"building on the copy verified at {manifest.verified_at}")
    return ModeDecision(FULL, f"full instead of incremental: {why}")


def target_oid(vps: ConnectionInfo, target: str) -> int | None:
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        return database_oid(conn, target)


def choose_mode(requested: str, manifest_file: Path, vps: ConnectionInfo, target: str, copy_of: str,
                adopted: bool, full_every: timedelta) -> tuple[ModeDecision, CopyManifest | None]:
    """The run's mode, from its request and the record of the current copy (run under the target's lock)."""
    manifest = read_manifest(manifest_file)
    oid = target_oid(vps, target) if requested == INCREMENTAL else None
    return decide_mode(requested, manifest, oid, copy_of, adopted, full_every), manifest


def read_increment_base(vps: ConnectionInfo, target: str, manifest: CopyManifest, schemas: list[str],
                        excluded_tables: list[tuple[str, str]],
                        recorded: Mapping[str, RecordedTable] | None = None) -> IncrementBase:
    """The current copy's tables: definition, chunk bounds and digests (or a whole digest). The digests
    its verification recorded (``recorded``) are taken as they are; only a table without them is read."""
    started = time.monotonic()
    recorded = recorded or {}
    with connect_or_explain(vps, "the VPS server", target) as conn:
        set_stable_output(conn)
        keys = chunk_keys(conn, schemas)
        streamed = streamed_tables(conn, schemas, excluded_tables)
        unrecorded = [table for table in streamed if table.qualified not in recorded]
        digested = [_digested_table(conn, table, keys.get(table.qualified)) for table in unrecorded]
        tables = {table.qualified: _copied_table(table, cut, parts)
                  for table, cut, parts in zip(unrecorded, digested, table_digests(conn, digested))}
        tables.update({table.qualified: CopiedTable(table.definition, *_recorded(recorded[table.qualified]))
                       for table in streamed if table.qualified in recorded})
        [encoding] = conn.execute("SELECT pg_encoding_to_char(encoding) FROM pg_database "
                                  "WHERE datname = current_database()").fetchone()
        large_objects = large_object_fingerprint(conn)
    return IncrementBase(manifest, tables, time.monotonic() - started, encoding, large_objects)


def _recorded(table: RecordedTable) -> tuple[TableFingerprint, ChunkBounds | None, Mapping[int, TableFingerprint]]:
    return table.whole, table.bounds, table.chunks


def cut_bounds(conn: psycopg.Connection, schemas: list[str], excluded_tables: list[tuple[str, str]],
               source_chunks: Mapping[str, Mapping[int, TableFingerprint]] | None = None,
               base: IncrementBase | None = None, *, skipped: Collection[str] = ()) -> dict[str, ChunkBounds]:
    """Chunk bounds of every keyed table but the ``skipped`` ones: the verification digests staging
    at them, for the next incremental run (see ``table_bounds``)."""
    keys = chunk_keys(conn, schemas)
    bounds = {}
    for table in streamed_tables(conn, schemas, excluded_tables):
        if table.qualified not in skipped:
            cut = table_bounds(conn, table, keys.get(table.qualified), source_chunks, base)
            if cut is not None:
                bounds[table.qualified] = cut
    return bounds


def table_bounds(conn: psycopg.Connection, table: StreamedTable, key: ChunkKey | None,
                 source_chunks: Mapping[str, Mapping[int, TableFingerprint]] | None = None,
                 base: IncrementBase | None = None) -> ChunkBounds | None:
    """Where staging's ``table`` is cut, by its ``key`` (None: it has none, and is digested whole).
    A table the source cut at ``base``'s bounds (``source_chunks`` holds its chunks' counts) keeps
    them, its crowded chunks cut again; the others are sampled afresh (the copy's tables grow:
    bounds cut once would leave their new rows in one chunk)."""
    if key is None:
        return None
    previous = base.tables[table.qualified].bounds if base and table.qualified in base.tables else None
    chunks = (source_chunks or {}).get(table.qualified)
    if previous is not None and previous.key == key and chunks is not None:
        counts = {number: chunk.rows for number, chunk in chunks.items()}
        return split_crowded_chunks(conn, table.schema, table.name, previous, counts, table.size_bytes)
    return chunk_bounds(conn, table.schema, table.name, key, table.size_bytes)


def _digested_table(conn: psycopg.Connection, table: StreamedTable, key: ChunkKey | None) -> DigestedTable:
    """The table as its digest reads it: cut at bounds of its key (read here), or whole without one."""
    bounds = None if key is None else chunk_bounds(conn, table.schema, table.name, key, table.size_bytes)
    return DigestedTable(table.schema, table.name, table.size_bytes, bounds)


def _copied_table(table: StreamedTable, digested: DigestedTable, parts: Mapping) -> CopiedTable:
    chunks = parts if digested.bounds is not None else {}
    return CopiedTable(table.definition, summed(parts.values()), digested.bounds, chunks)


# A result row as the server sends it: its type, length and field count, and each field's length.
_DATA_ROW_BYTES, _FIELD_BYTES = 7, 4


def chunk_digest_bytes(fingerprint: DatabaseFingerprint) -> int:
    """About what the source sent for the chunk digests: each chunk's row (number, count, digest) as text."""
    return sum(_DATA_ROW_BYTES + 3 * _FIELD_BYTES + len(str(number)) + len(str(chunk.rows)) + len(chunk.digest)
               for chunks in fingerprint.chunks.values() for number, chunk in chunks.items())


# A changed chunk of a file copy is compared again in about this many parts before rows are fetched:
# a scattered delete or update of an old row then costs a part of a chunk's egress, not all of it,
# for one more digest per part (about 45 bytes) and a read of the changed chunks on each side.
PARTS_PER_CHUNK = 16
# Where more than this share of a table's chunks changed (a mass update), most parts would differ
# too: comparing them would cost a second read of the table on each side and 16 digests a chunk.
REFINED_SHARE = 0.5


@dataclass(frozen=True)
class ChangedChunks:
    """A table's changed chunks, replaced in a file copy of the current copy."""

    table: StreamedTable
    bounds: ChunkBounds
    numbers: frozenset[int]
    rows: int  # what the current copy holds in them


@dataclass
class IncrementalCopy:
    """What an incremental copy does, for its log and metadata."""

    tasks: list[CopyRange]
    chunks_compared: int = 0
    chunks_copied: int = 0
    tables_kept: list[str] = field(default_factory=list)  # every row from the current copy
    tables_copied_whole: list[str] = field(default_factory=list)  # new, redefined, or unkeyed and changed
    changed: list[ChangedChunks] = field(default_factory=list)  # in a file copy: compared again, finer
    parts_compared: int = 0  # the changed chunks' parts (``refine_changed_chunks``)
    parts_copied: int = 0

    def describe(self) -> str:
        parts = (f" ({self.parts_copied} of their {self.parts_compared} parts)" if self.parts_compared else "")
        return (f"incremental copy: {self.chunks_copied} of {self.chunks_compared} chunks changed{parts}; "
                f"{len(self.tables_kept)} tables unchanged, {len(self.tables_copied_whole)} copied whole "
                "(new, redefined, or without a usable key and changed)")


def incremental_tasks(tables: list[StreamedTable], base: IncrementBase, source: DatabaseFingerprint,
                      range_bytes: int, source_major: int, *, in_place: bool = False) -> IncrementalCopy:
    """The copy's work: per table, its changed chunks from the snapshot, and (into an empty staging)
    its unchanged ones from the current copy; whole from the source where the table is new,
    redefined, or cannot be cut and changed. ``in_place``: staging is a file copy of the current copy,
    so a changed range replaces the rows staging holds there, and unchanged rows stay as they are."""
    plan = IncrementalCopy([])

    def whole_from_source(table: StreamedTable) -> None:
        plan.tables_copied_whole.append(table.qualified)
        plan.tasks += [CopyRange(table, replaces=True)] if in_place \
            else copy_ranges([table], range_bytes, source_major)

    for table in tables:
        copied = base.tables.get(table.qualified)
        source_chunks = source.chunks.get(table.qualified)
        if copied is None or copied.definition != table.definition:
            whole_from_source(table)
        elif copied.bounds is not None and source_chunks is not None:
            _chunk_tasks(plan, table, copied, source_chunks, in_place)
        elif copied.whole.same_rows(source.tables.get(table.qualified)):
            plan.tables_kept.append(table.qualified)
            if not in_place:
                plan.tasks.append(CopyRange(table, from_copy=True))
        else:
            whole_from_source(table)
    return plan


def _chunk_tasks(plan: IncrementalCopy, table: StreamedTable, copied: CopiedTable,
                 source_chunks: Mapping[int, TableFingerprint], in_place: bool) -> None:
    """Changed chunks come from the snapshot; into an empty staging the others come from the copy
    (the two sets of key ranges cover every row exactly once); into a file copy they stay."""
    assert copied.bounds is not None
    numbers = source_chunks.keys() | copied.chunks.keys()
    changed = {n for n in numbers if source_chunks.get(n) != copied.chunks.get(n)}
    plan.chunks_compared += len(numbers)
    plan.chunks_copied += len(changed)
    plan.tasks += _replaced_chunks(table, copied.bounds, changed, "changed chunks", in_place)
    if in_place and changed and len(changed) <= len(numbers) * REFINED_SHARE:
        rows = sum(copied.chunks[number].rows for number in changed if number in copied.chunks)
        plan.changed.append(ChangedChunks(table, copied.bounds, frozenset(changed), rows))
    if not in_place:
        for condition, count in copied.bounds.selections(copied.chunks.keys() - changed):
            plan.tasks.append(CopyRange(table, whole=False, selection=condition, from_copy=True,
                                        label=f"{count} unchanged chunks from the copy"))
    if not changed:
        plan.tables_kept.append(table.qualified)


def _replaced_chunks(table: StreamedTable, bounds: ChunkBounds, chunks: set[int], what: str,
                     in_place: bool) -> list[CopyRange]:
    return [CopyRange(table, whole=False, selection=condition, label=f"{count} {what}", replaces=in_place)
            for condition, count in bounds.selections(chunks)]


def refine_changed_chunks(plan: IncrementalCopy, staging: psycopg.Connection,
                          on_source: Callable[[Callable[[psycopg.Connection], T]], T]) -> None:
    """Each table's changed chunks cut into parts at keys of the file copy (``staging``), both sides
    digested at those parts, and only the parts that differ replaced (``plan.tasks``).

    ``on_source`` runs a query in the run's snapshot (``HeldSnapshot.run``). Every row of a
    changed chunk is in exactly one of its parts, on either side, as with the chunks themselves.
    """
    if not plan.changed:
        return
    with by_key_ranges(staging):
        cut = [_parts(staging, changed) for changed in plan.changed]
        there = table_digests(staging, cut)
    here = on_source(lambda snapshot: _digests_by_key_ranges(snapshot, cut))
    # In a file copy a keyed table's only tasks are its changed chunks: their parts replace them.
    refined = {changed.table for changed in plan.changed}
    plan.tasks = [task for task in plan.tasks if task.table not in refined]
    for changed, digested, copy, source in zip(plan.changed, cut, there, here):
        differing = {n for n in copy.keys() | source.keys() if copy.get(n) != source.get(n)}
        plan.parts_compared += len(copy.keys() | source.keys())
        plan.parts_copied += len(differing)
        assert digested.bounds is not None
        plan.tasks += _replaced_chunks(changed.table, digested.bounds, differing, "changed parts of chunks", True)


def _parts(staging: psycopg.Connection, changed: ChangedChunks) -> DigestedTable:
    """The table's changed chunks as parts to digest: cut at every so many of the keys staging holds there."""
    table, bounds = changed.table, changed.bounds
    selection = bounds.any_of(changed.numbers)
    every = changed.rows // (len(changed.numbers) * PARTS_PER_CHUNK)
    keys = keys_inside_chunks(staging, table.schema, table.name, bounds, selection, every)
    return DigestedTable(table.schema, table.name, table.size_bytes, bounds.with_keys_inside(keys), selection)


def _digests_by_key_ranges(conn: psycopg.Connection, tables: list[DigestedTable]) -> list[Mapping]:
    with by_key_ranges(conn):
        return table_digests(conn, tables)
