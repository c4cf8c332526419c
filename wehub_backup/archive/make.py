"""Make an archive of a verified VPS copy: locally, from the VPS, so it costs no Supabase egress.

pg_dump 15 compresses only with gzip, and slowly; so pg_dump writes its custom format
uncompressed to a pipe and this process compresses it with zstd on the way to the file,
hashing the compressed bytes as they are written (the manifest's SHA-256 costs no second
read). The copy is fingerprinted in the snapshot pg_dump reads, on the snapshot's own
session, while pg_dump streams: the manifest's fingerprint is exactly what the archive holds.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import psycopg
import zstandard

from wehub_backup.archive.store import ARCHIVE_FILE, MANIFEST_FILE, Manifest, archive_id, partial_path, remove_partials
from wehub_backup.errors import ArchiveError
from wehub_backup.files import open_private, write_private_text
from wehub_backup.pg.catalog import RoleInfo
from wehub_backup.pg.clients import PgClient
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.fingerprint import fingerprint_database
from wehub_backup.pg.processes import ToolProcess
from wehub_backup.pg.snapshot import export_locked_snapshot
from wehub_backup.run.log import Log
from wehub_backup.run.workdir import ensure_private_directory
from wehub_backup.threads import run_beside

ZSTD_LEVEL = 3  # zstd's default: a third of the size of an uncompressed dump at a few hundred MB/s per core
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveRequest:
    """What to archive: a verified copy on the VPS, and what its manifest says about it."""

    database: str
    source: str  # the copy's mark's source
    run_id: str
    client: PgClient
    encoding: str
    schemas: list[str]
    excluded_tables: list[tuple[str, str]]
    roles: list[RoleInfo]
    secrets_dir: Path


def make_archive(request: ArchiveRequest, vps: ConnectionInfo, root: Path, log: Log,
                 *, low_priority: bool = True, now: datetime | None = None) -> Manifest:
    """Dump, compress, hash and fingerprint ``request.database`` into a new archive under ``root``."""
    ensure_private_directory(root)
    for leftover in remove_partials(root):
        log(f"removed the half-written archive {leftover.name} of a run that died")
    created = (now or datetime.now(UTC)).replace(microsecond=0)
    name = archive_id(request.database, created)
    if (root / name).exists():
        raise ArchiveError(f"archive {name} exists already (two archives of {request.database} in one second)")
    partial = ensure_private_directory(partial_path(root, name))
    try:
        manifest = _write_archive(request, vps, partial, name, created, log, low_priority)
        write_private_text(partial / MANIFEST_FILE, manifest.to_json())
        partial.rename(root / name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _write_archive(request: ArchiveRequest, vps: ConnectionInfo, directory: Path, name: str, created: datetime,
                   log: Log, low_priority: bool) -> Manifest:
    """pg_dump from a snapshot of the copy, compressed into ``directory``, fingerprinted meanwhile."""
    with vps.connect(request.database, autocommit=False) as snap:
        snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snap.read_only = True
        snapshot, _ = export_locked_snapshot(snap, request.schemas, request.excluded_tables, vps.lock_timeout_s, log)
        argv = [request.client.program("pg_dump"), "--format=custom", "--compress=0", f"--snapshot={snapshot}",
                "--no-password", f"--dbname={request.database}"]
        with vps.tool_environment(request.secrets_dir / "archive.pgpass", request.database) as env, \
                ToolProcess(argv, env, log=log, low_priority=low_priority, stdout=subprocess.PIPE) as pg_dump, \
                open_private(directory / ARCHIVE_FILE) as sink:
            assert pg_dump.process.stdout is not None
            (written, dump_bytes, sha256), fingerprint = run_beside(
                lambda: _compress(pg_dump.process.stdout, sink),
                lambda: fingerprint_database(snap, request.schemas, request.excluded_tables, large_objects=True),
                "archive-compress", on_failure=pg_dump.stop_because,
            )
            pg_dump.finish()
        snap.rollback()
    log(f"archived {request.database}: {dump_bytes} bytes of dump, {written} bytes compressed with zstd")
    return Manifest(
        id=name, source=request.source, database=request.database, run_id=request.run_id,
        created_at=created.isoformat(), pg_dump_version=request.client.version, encoding=request.encoding,
        schemas=request.schemas, excluded_tables=request.excluded_tables, roles=request.roles,
        fingerprint=fingerprint, archive_bytes=written, dump_bytes=dump_bytes, sha256=sha256,
    )


class _HashingSink:
    """A file that counts and hashes what is written to it: the compressed archive as it is made."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.written = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.written += len(data)
        return self.sink.write(data)


def _compress(dump: IO[bytes], sink: IO[bytes]) -> tuple[int, int, str]:
    """zstd from ``dump`` to ``sink``; the bytes written, the bytes read, and the SHA-256 of what was written."""
    hashing, read = _HashingSink(sink), 0
    with zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(hashing, closefd=False) as compressor:
        for chunk in iter(lambda: dump.read(_CHUNK), b""):
            read += len(chunk)
            compressor.write(chunk)
    return hashing.written, read, hashing.digest.hexdigest()
