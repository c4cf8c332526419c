"""Archives on disk: one directory per archive, named by its ID, holding the compressed dump and
its manifest.

``<archive dir>/<id>/archive.dump.zst`` is ``pg_dump --format=custom --compress=0`` of the
verified copy, compressed with zstd; ``manifest.json`` says what it is a copy of, when and by
which run it was made, the copy's fingerprint (to verify a restore) and the SHA-256 of the
compressed file (to refuse a damaged one before anything changes). An archive is written
under ``.<id>.partial`` and renamed into place once its manifest is complete, so a listed
archive is always whole; a partial one left by a killed run is removed by the next one.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from wehub_backup.errors import ArchiveError
from wehub_backup.files import write_private_text
from wehub_backup.pg.catalog import RoleInfo
from wehub_backup.pg.digests import TableFingerprint
from wehub_backup.pg.fingerprint import DatabaseFingerprint
from wehub_backup.units import human_bytes

ARCHIVE_FILE = "archive.dump.zst"
MANIFEST_FILE = "manifest.json"
OFFSITE_FILE = "offsite.json"
PARTIAL_PREFIX, PARTIAL_SUFFIX = ".", ".partial"
MANIFEST_FORMAT = 1
_STAMP = "%Y%m%dT%H%M%SZ"
_ARCHIVE_ID = re.compile(r"\d{8}T\d{6}Z-[a-z_][a-z0-9_]*")
_HASH_CHUNK = 1024 * 1024


def archive_id(database: str, created_at: datetime) -> str:
    """``20261206T020512Z-wehub``: sorts by time, names the copy, safe as a file name and a shell word."""
    return f"{created_at.astimezone(UTC):{_STAMP}}-{database}"


def validate_archive_id(value: str) -> str:
    if not _ARCHIVE_ID.fullmatch(value):
        raise ArchiveError(f"invalid archive ID {value!r}: IDs look like 20261206T020512Z-wehub "
                           "(wehub-backup archives lists them)")
    return value


@dataclass(frozen=True)
class Manifest:
    """What an archive holds and how to check it."""

    id: str
    source: str  # the copy's source as its mark names it (login@host/database)
    database: str  # the VPS database archived
    run_id: str
    created_at: str  # ISO 8601, UTC
    pg_dump_version: str
    encoding: str
    schemas: list[str]
    excluded_tables: list[tuple[str, str]]
    roles: list[RoleInfo]
    fingerprint: DatabaseFingerprint
    archive_bytes: int
    dump_bytes: int  # before compression
    sha256: str
    format: int = MANIFEST_FORMAT

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)

    @property
    def rows(self) -> int:
        return self.fingerprint.total_rows

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format") != MANIFEST_FORMAT:
            raise ArchiveError(f"manifest format {data.get('format')!r} is not one this version reads")
        fp = data["fingerprint"]
        fingerprint = DatabaseFingerprint(
            tables={name: TableFingerprint(**table) for name, table in fp["tables"].items()},
            sequences=fp["sequences"], object_counts=fp["object_counts"],
            large_objects=TableFingerprint(**fp["large_objects"]) if fp.get("large_objects") else None,
        )
        roles = [RoleInfo(**{**role, "member_of": tuple(role["member_of"]), "settings": tuple(role["settings"])})
                 for role in data["roles"]]
        return cls(**{**data, "fingerprint": fingerprint, "roles": roles,
                      "excluded_tables": [tuple(pair) for pair in data["excluded_tables"]]})


@dataclass(frozen=True)
class StoredArchive:
    """One archive directory as found on disk."""

    path: Path
    manifest: Manifest
    offsite: dict = field(default_factory=dict)  # the off-site copy's state (``offsite.json``), if any

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def file(self) -> Path:
        return self.path / ARCHIVE_FILE

    @property
    def good(self) -> bool:
        """Whole as far as can be told without reading it: the file has the manifest's size."""
        return self.file.is_file() and self.file.stat().st_size == self.manifest.archive_bytes

    def checksum_ok(self) -> bool:
        """The file's SHA-256 against the manifest's (reads the whole file)."""
        return self.file.is_file() and file_sha256(self.file) == self.manifest.sha256


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_archives(root: Path) -> list[StoredArchive]:
    """Every complete archive under ``root``, oldest first; a directory whose manifest cannot be
    read is not an archive (it is never listed, restored or pruned)."""
    found = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if not (path.is_dir() and _ARCHIVE_ID.fullmatch(path.name)):
            continue
        try:
            manifest = Manifest.from_json((path / MANIFEST_FILE).read_text())
        except (OSError, ValueError, KeyError, TypeError, ArchiveError):
            continue
        found.append(StoredArchive(path, manifest, _read_offsite(path)))
    return sorted(found, key=lambda archive: archive.manifest.created_at)


def find_archive(root: Path, wanted: str) -> StoredArchive:
    validate_archive_id(wanted)
    for archive in list_archives(root):
        if archive.id == wanted:
            return archive
    raise ArchiveError(f"no archive {wanted} in {root} (wehub-backup archives lists them)")


def _read_offsite(path: Path) -> dict:
    try:
        return json.loads((path / OFFSITE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_offsite_state(archive: StoredArchive, state: dict) -> None:
    write_private_text(archive.path / OFFSITE_FILE, json.dumps(state, sort_keys=True) + "\n")


def partial_path(root: Path, archive: str) -> Path:
    return root / f"{PARTIAL_PREFIX}{archive}{PARTIAL_SUFFIX}"


def remove_partials(root: Path) -> Iterator[Path]:
    """Archives a killed run left half-written (only one run per target archives at a time: its lock)."""
    for path in root.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}") if root.is_dir() else []:
        shutil.rmtree(path, ignore_errors=True)
        yield path


def archive_line(archive: StoredArchive, checksum_ok: bool | None) -> str:
    """One line of ``wehub-backup archives``: the ID first, so it can be cut and pasted."""
    manifest = archive.manifest
    checked = {True: "checksum ok", False: "CHECKSUM MISMATCH", None: "checksum not checked"}[checksum_ok]
    offsite = f", off-site {archive.offsite.get('state', 'pending')}" if archive.offsite else ""
    return (f"{manifest.id}  {manifest.created:%Y-%m-%d %H:%M:%S UTC}  {human_bytes(manifest.archive_bytes)}  "
            f"{manifest.rows} rows  {checked}{offsite}")
