"""Restore an archive into a VPS database: the checksum first, the fingerprint after, and the same
staging -> verify -> swap path as a backup.

The archive is decompressed into the run's working directory while its SHA-256 is computed, and
a mismatch stops the run before any database is created or touched. It is restored into a
marked ``<database>__staging``, fingerprinted against its manifest, and only then swapped in
(``backup.promote``): a new database, or, with ``replace``, over a copy this project made of
the same source, whose old generation stays as ``<database>__previous``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import zstandard

from wehub_backup.archive.store import StoredArchive, find_archive
from wehub_backup.backup.plan import require_superuser
from wehub_backup.backup.stage import recreate_marked_staging
from wehub_backup.config import dagster_storage_database
from wehub_backup.errors import (
    ArchiveCorrupted,
    ArchiveError,
    NotEnoughSpace,
    VerificationFailed,
    VersionMismatch,
    first_of,
)
from wehub_backup.files import open_private
from wehub_backup.pg.catalog import ServerInfo, server_info
from wehub_backup.pg.clients import PgClient, choose_client
from wehub_backup.pg.connection import MAINTENANCE_DATABASE, ConnectionInfo
from wehub_backup.pg.databases import database_exists
from wehub_backup.pg.fingerprint import compare_fingerprints, fingerprint_database
from wehub_backup.pg.processes import run_pipeline, run_tool
from wehub_backup.pg.tool_output import ProgressFilter
from wehub_backup.preflight import connect_or_explain
from wehub_backup.run.log import Log
from wehub_backup.run.marks import check_replaceable
from wehub_backup.run.targets import staging_name, validate_target_name
from wehub_backup.run.workdir import space_shortfall
from wehub_backup.supabase.roles import ensure_standin_roles

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveRestorePlan:
    archive: StoredArchive
    target: str
    replace: bool
    dump: Path  # the decompressed, checksum-verified dump in the run's working directory
    client: PgClient
    server: ServerInfo
    secrets_dir: Path
    jobs: int

    @property
    def staging(self) -> str:
        return staging_name(self.target)

    @property
    def copy_of(self) -> str:
        return self.archive.manifest.source


def check_archive_request(archive_root: Path, archive_id: str, target: str) -> StoredArchive:
    """The archive asked for and a valid database name, before anything is read or changed."""
    validate_target_name(target, forbidden={dagster_storage_database(): "Dagster's storage database"})
    return find_archive(archive_root, archive_id)


def unpack_verified(archive: StoredArchive, workdir: Path) -> Path:
    """Decompress the archive into ``workdir``, hashing the compressed bytes as they are read;
    ``ArchiveCorrupted`` (and nothing left behind) unless they are exactly what was archived."""
    shortfall = space_shortfall(workdir, archive.manifest.dump_bytes + 64 * 2**20, f"archive {archive.id} unpacked")
    if shortfall:
        raise NotEnoughSpace(shortfall)
    if not archive.file.is_file():
        raise ArchiveCorrupted(f"archive {archive.id} has no dump file in {archive.path}; nothing was changed")
    dump, digest = workdir / "archive.dump", hashlib.sha256()
    try:
        with archive.file.open("rb") as compressed, open_private(dump) as sink:
            reader = zstandard.ZstdDecompressor().stream_reader(_Hashing(compressed, digest), closefd=False)
            for chunk in iter(lambda: reader.read(_CHUNK), b""):
                sink.write(chunk)
            while compressed.read(_CHUNK):  # bytes after the zstd frame count too
                pass
    except zstandard.ZstdError as error:
        dump.unlink(missing_ok=True)
        raise ArchiveCorrupted(f"archive {archive.id} is damaged ({error}); nothing was changed") from None
    if digest.hexdigest() != archive.manifest.sha256:
        dump.unlink(missing_ok=True)
        raise ArchiveCorrupted(
            f"archive {archive.id} is damaged: its SHA-256 is {digest.hexdigest()[:16]}..., its manifest says "
            f"{archive.manifest.sha256[:16]}...; nothing was changed (restore another archive, or its off-site copy)")
    return dump


class _Hashing:
    """A file read through a hash: what the decompressor reads is what is checked."""

    def __init__(self, source, digest) -> None:  # noqa: ANN001 - a binary file and a hashlib object
        self.source, self.digest = source, digest

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        return data


def check_vps_for_restore(archive: StoredArchive, target: str, replace: bool, vps: ConnectionInfo,
                          extra_bindirs: list[Path]) -> tuple[PgClient, ServerInfo]:
    """Under the target's lock: a superuser, a client that reads the archive, and a target that is new,
    or (``replace``) this project's copy of the archive's source."""
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        server = server_info(conn)
        require_superuser(server)
        if database_exists(conn, target) and not replace:
            raise ArchiveError(f"VPS database {target} exists; this run changed nothing (restore into a new "
                               "database, or replace it: replace_existing: true, or wehub-backup restore-archive "
                               "--replace)")
        check_replaceable(conn, target, archive.manifest.source, adopt=False)
    client = choose_client(server.major, extra_bindirs, "restore")
    archived_major = int(archive.manifest.pg_dump_version.split(".")[0])
    if client.major < archived_major:
        raise VersionMismatch(f"archive {archive.id} was made by pg_dump {archive.manifest.pg_dump_version}; "
                              f"pg_restore {client.version} cannot read it: install postgresql-client-{archived_major}")
    return client, server


def restore_into_staging(plan: ArchiveRestorePlan, vps: ConnectionInfo, log: Log, *,
                         low_priority: bool = True) -> float:
    """A fresh marked staging database, the archive's roles as stand-ins, then pg_restore; the seconds it took."""
    started = time.monotonic()
    with connect_or_explain(vps, "the VPS server", MAINTENANCE_DATABASE) as conn:
        recreate_marked_staging(conn, plan.target, plan.copy_of, plan.archive.manifest.encoding, adopt=False)
        ensure_standin_roles(conn, plan.archive.manifest.roles)
    with vps.tool_environment(plan.secrets_dir / "vps.pgpass", plan.staging) as env:
        common = ["--no-tablespaces", "--no-security-labels", str(plan.dump)]
        if plan.client.major <= plan.server.major:
            run_tool([plan.client.program("pg_restore"), f"--dbname={plan.staging}", f"--jobs={plan.jobs}",
                      "--exit-on-error", "--no-password", "--verbose", *common],
                     env, on_line=ProgressFilter(log), log=log, low_priority=low_priority)
        else:
            run_pipeline([plan.client.program("pg_restore"), "--file=-", *common],
                         [plan.client.program("psql"), "--no-psqlrc", "--quiet", "--no-password", "-v",
                          "ON_ERROR_STOP=1", f"--dbname={plan.staging}"],
                         env, server_major=plan.server.major, on_line=ProgressFilter(log), log=log,
                         low_priority=low_priority)
    return time.monotonic() - started


def verify_restored(plan: ArchiveRestorePlan, vps: ConnectionInfo) -> tuple[int, int]:
    """The restored copy's fingerprint against the manifest's; the tables and rows verified."""
    manifest = plan.archive.manifest
    with connect_or_explain(vps, "the VPS server", plan.staging) as conn:
        copy = fingerprint_database(conn, manifest.schemas, manifest.excluded_tables, large_objects=True)
    problems = compare_fingerprints(manifest.fingerprint, copy)
    if problems:
        raise VerificationFailed(f"the restored archive {manifest.id} differs from its manifest: {first_of(problems)}")
    return len(copy.tables), copy.total_rows
