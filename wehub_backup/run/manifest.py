"""The record of the verified copy a target holds, which an incremental backup builds on.

An incremental run starts its staging database from the current copy and fetches only what
changed, so it must know that copy is one the project verified, of this source, and when the
last full copy was made. The record says so, for the very database it was written for: the
target's OID is in it, so a copy put there any other way (restored from an archive, or
replaced by hand) has no record and gets a full copy. A failed verification forgets the
record, so the run after it is full as well.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from wehub_backup.files import open_private, write_private_text
from wehub_backup.pg.chunks import ChunkBounds, ChunkKey
from wehub_backup.pg.digests import ChunkDigests, TableFingerprint
from wehub_backup.pg.fingerprint import DatabaseFingerprint
from wehub_backup.run.workdir import ensure_private_directory

MANIFEST_DIRECTORY = "copies"


@dataclass(frozen=True)
class CopyManifest:
    """What is known of a verified copy: its source, its database, when it was verified, and when the
    last full copy it builds on was made."""

    source: str
    database_oid: int
    verified_at: str  # ISO 8601, UTC
    full_at: str
    mode: str  # "full" or "incremental": how this copy was made
    schema_digest: str  # of the schema script it was restored from: an unchanged schema lets staging be a file copy

    def full_age(self, now: datetime) -> timedelta:
        return now - datetime.fromisoformat(self.full_at)


def manifest_path(backup_dir: Path, target: str) -> Path:
    return backup_dir / MANIFEST_DIRECTORY / f"{target}.json"


def read_manifest(path: Path) -> CopyManifest | None:
    """The record at ``path``, or None when there is none or it cannot be read as one."""
    try:
        return CopyManifest(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def record_copy(path: Path, source: str, database_oid: int, mode: str, schema_digest: str,
                previous: CopyManifest | None, now: datetime | None = None) -> CopyManifest:
    """Write the record of a copy just swapped in; an incremental one keeps its full copy's date."""
    stamp = (now or datetime.now(UTC)).isoformat()
    full_at = previous.full_at if mode == "incremental" and previous is not None else stamp
    manifest = CopyManifest(source, database_oid, stamp, full_at, mode, schema_digest)
    ensure_private_directory(path.parent)
    write_private_text(path, json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def forget_copy(path: Path) -> None:
    """Drop the record and its digests: the copy can no longer be trusted as the base of an incremental run."""
    path.unlink(missing_ok=True)
    chunk_record_path(path).unlink(missing_ok=True)


def chunk_record_path(manifest_file: Path) -> Path:
    """Where the table and chunk digests of the copy a manifest describes are kept, beside it."""
    return manifest_file.with_suffix(".chunks.json")


@dataclass(frozen=True)
class RecordedTable:
    whole: TableFingerprint
    bounds: ChunkBounds | None  # None: compared whole
    chunks: Mapping[int, TableFingerprint]


def record_chunks(path: Path, bounds: Mapping[str, ChunkBounds], fingerprint: DatabaseFingerprint) -> None:
    """Keep the verified copy's table and chunk digests as its verification computed them: the next
    incremental run compares the source with them instead of reading the whole copy again.

    Each keyed table's chunks are listed densely (counts, then digests, by chunk number; an empty
    chunk's are 0) and written as they are encoded: the record of a GiB is not built in memory whole.
    """
    ensure_private_directory(path.parent)
    with io.TextIOWrapper(open_private(path), encoding="utf-8") as text:
        text.write("{")
        for place, (name, table) in enumerate(fingerprint.tables.items()):
            entry: dict[str, object] = {"rows": table.rows, "digest": table.digest}
            chunks = fingerprint.chunks.get(name)
            if chunks is not None:
                key = bounds[name].key
                entry.update(key=[key.column, key.type, key.string], bounds=list(bounds[name].bounds),
                             chunks=_dense(chunks, bounds[name].chunks))
            text.write(("," if place else "") + json.dumps(name) + ":")
            json.dump(entry, text)
        text.write("}")


def _dense(chunks: Mapping[int, TableFingerprint], count: int) -> dict[str, list[int]]:
    """Each of ``count`` chunks' row count and digest in chunk order, 0 and 0 for an empty one."""
    rows, digests = [0] * count, [0] * count
    for number, chunk in chunks.items():
        rows[number], digests[number] = chunk.rows, int(chunk.digest)
    return {"rows": rows, "digests": digests}


def _packed(rows: list[int], digests: list[int]) -> ChunkDigests:
    """The chunks ``_dense`` listed, packed again."""
    if len(rows) != len(digests):
        raise ValueError(f"{len(rows)} chunk counts against {len(digests)} digests")
    chunks = ChunkDigests(len(rows))
    for number, (count, digest) in enumerate(zip(rows, digests)):
        if count:
            chunks.add(number, int(count), int(digest))
    return chunks


def read_chunks(path: Path) -> dict[str, RecordedTable]:
    """The recorded digests by table; none when there is no record or it cannot be read as one."""
    try:
        return {name: _recorded_table(entry) for name, entry in json.loads(path.read_text()).items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _recorded_table(entry: dict) -> RecordedTable:
    whole = TableFingerprint(int(entry["rows"]), str(entry["digest"]))
    if "key" not in entry:
        return RecordedTable(whole, None, {})
    column, type_name, string = entry["key"]
    bounds = ChunkBounds(ChunkKey(str(column), str(type_name), bool(string)), tuple(str(b) for b in entry["bounds"]))
    rows, digests = entry["chunks"]["rows"], entry["chunks"]["digests"]
    if len(rows) != bounds.chunks:
        raise ValueError(f"{len(rows)} chunks recorded where the bounds cut {bounds.chunks}")
    return RecordedTable(whole, bounds, _packed(rows, digests))
