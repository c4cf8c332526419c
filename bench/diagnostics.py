"""Untimed cost breakdown: where the job's time goes, measured piece by piece.

Each figure isolates one choice the job makes (compression level, the byte-counting
relay, low CPU priority, leaving ANALYZE to autovacuum, the Python and Dagster start-up)
by running that piece alone on the same servers after the timed runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from wehub_backup.pg.clients import PgClient, program_version
from wehub_backup.pg.digests import set_stable_output, table_digest
from wehub_backup.pg.processes import run_tool
from wehub_backup.pg.relay import ByteCountingRelay
from wehub_backup.run.log import Log
from wehub_backup.run.workdir import directory_bytes
from wehub_backup_tests.harness.cluster import find_newer_postgres_bindir

if TYPE_CHECKING:
    from bench.run import Session

NEWER_CLIENT_NOTE = "pg_dump 17"


@dataclass(frozen=True)
class DumpVariant:
    """One way to run ``pg_dump -Fd -j N`` of the job's scope."""

    label: str
    compression: tuple[str, ...]
    relayed: bool = False
    niced: bool = False
    newer_client: bool = False


DUMP_VARIANTS = (
    DumpVariant("no compression (the job's choice with pg_dump 15)", ("--compress=0",)),
    DumpVariant("gzip level 1", ("--compress=1",)),
    DumpVariant("gzip default level (what -Fd does unasked)", ()),
    DumpVariant("no compression, through the relay", ("--compress=0",), relayed=True),
    DumpVariant("no compression, through the relay, nice/ionice (the job's dump)", ("--compress=0",), True, True),
    DumpVariant(f"lz4 ({NEWER_CLIENT_NOTE})", ("--compress=lz4",), newer_client=True),
    DumpVariant(f"zstd level 1 ({NEWER_CLIENT_NOTE}: the job's choice with a 16+ client)", ("--compress=zstd:1",),
                newer_client=True),
)
ATTEMPTS = 2
# Per-table digests a verification could compute, beside the job's own (None: fingerprint.table_digest).
DIGEST_VARIANTS = {
    "the job's digest: hash_record_extended, text for types hashed by OID": None,
    "md5 of each row's text": (
        "SELECT count(*), sum(('x' || substr(h, 1, 16))::bit(64)::bigint), sum(('x' || substr(h, 17, 16))::bit(64)::bigint)"
        " FROM (SELECT md5({row}::text) AS h FROM {table} AS t) AS rows"),
    "hashtextextended of each row's text": (
        "SELECT count(*), sum(hashtextextended(r, 0)) FROM (SELECT {row}::text AS r FROM {table} AS t) AS rows"),
    "hash_record_extended, seeds 0 and 1 (128 bits)": (
        "SELECT count(*), sum(hash_record_extended({row}, 0)), sum(hash_record_extended({row}, 1)) FROM {table} AS t"),
    "hash_record_extended (no text conversion)": (
        "SELECT count(*), sum(hash_record_extended({row}, 0)) FROM {table} AS t"),
}


def run_all(session: Session, copy: str, log: Log) -> dict[str, object]:
    """The untimed cost breakdown; ``copy`` is a restored copy of the source to measure on."""
    newer = newer_client()
    variants = [v for v in DUMP_VARIANTS if newer or not v.newer_client]
    dumps = [min((dump_variant(session, v, newer) for _ in range(ATTEMPTS)), key=lambda d: d["seconds"])
             for v in variants]
    for dump in dumps:
        log(f"diagnostic dump, {dump['label']}: {dump['seconds']:.1f} s, {dump['artifact_bytes'] / 2**20:.1f} MiB")
    found: dict[str, object] = {"dumps": dumps}
    found["analyze_s"] = analyze_seconds(session, copy)
    log(f"ANALYZE of a restored copy: {found['analyze_s']:.1f} s")
    found["digests"] = [digest_timing(session, copy, label, template, sessions)
                        for label, template in DIGEST_VARIANTS.items() for sessions in (1, session.jobs)]
    for digest in found["digests"]:
        log(f"digest of a copy, {digest['label']}, {digest['sessions']} session(s): {digest['seconds']:.1f} s")
    found["import_s"] = command_seconds([sys.executable, "-c", "import wehub_backup.definitions"])
    found["python_start_s"] = command_seconds([sys.executable, "-c", "pass"])
    found["dagster_import_s"] = command_seconds([sys.executable, "-c", "import dagster"])
    found["storage_import_s"] = command_seconds([sys.executable, "-c", SQLITE_STORAGE_IMPORT])
    log(f"python start {found['python_start_s']:.2f} s; importing the code location {found['import_s']:.2f} s")
    return found


# What opening the instance's SQLite storage imports (SQLAlchemy, Alembic), beside Dagster itself.
SQLITE_STORAGE_IMPORT = "import dagster._core.storage.event_log.sqlite, dagster._core.storage.runs.sqlite"


def newer_client() -> PgClient | None:
    """The PostgreSQL 17 client programs of the test harness, when installed (they have lz4 and zstd)."""
    bindir = find_newer_postgres_bindir()
    version = program_version(bindir / "pg_dump") if bindir else None
    return PgClient(bindir, version[0], version[1]) if bindir and version else None


def dump_variant(session: Session, variant: DumpVariant, newer: PgClient | None) -> dict[str, object]:
    """One ``pg_dump -Fd -j N`` of the job's scope; seconds, size, CPU and bytes received."""
    archive = session.workdir / "diagnostic-archive"
    shutil.rmtree(archive, ignore_errors=True)
    client = newer if variant.newer_client and newer else session.client
    source = session.servers.source_info(session.passfile)
    session.wait_until_idle()
    with ByteCountingRelay(session.servers.source.host, session.servers.source.port) as relay:
        connection = source.via_relay(relay.port) if variant.relayed else source
        env = connection.libpq_environment(session.workdir / "diagnostic.pgpass")
        argv = [client.program("pg_dump"), "--format=directory", f"--jobs={session.jobs}", f"--file={archive}",
                "--no-password", "--no-sync", *variant.compression, *session.plan.scope.pg_dump_arguments()]
        run = run_tool(argv, env, low_priority=variant.niced)
    size = directory_bytes(archive)
    shutil.rmtree(archive, ignore_errors=True)
    return {"label": variant.label, "seconds": run.seconds, "artifact_bytes": size, "cpu_s": run.cpu_seconds}


def digest_timing(session: Session, database: str, label: str, template: str | None, sessions: int) -> dict[str, object]:
    """Wall time to digest every table of a copy, on ``sessions`` connections side by side."""
    tables = sorted(session.source_fingerprint.tables.items(), key=lambda item: -item[1].size_bytes)
    shares = [[name for name, _ in tables[i::sessions]] for i in range(sessions)]

    def digest_share(names: list[str]) -> None:
        with session.target_connection(database) as conn:
            set_stable_output(conn)
            for name in names:
                schema, _, table = name.partition(".")
                if template is None:
                    table_digest(conn, schema, table)
                else:
                    conn.execute(digest_query(conn, template, schema, table)).fetchall()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=sessions) as pool:
        for future in [pool.submit(digest_share, share) for share in shares]:
            future.result()
    return {"label": label, "sessions": sessions, "seconds": time.monotonic() - started}


_HASHABLE_COLUMNS = """
SELECT a.attname, t.typtype = 'e' OR EXISTS (
         SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod AND am.amname = 'hash'
         JOIN pg_amproc ap ON ap.amprocfamily = oc.opcfamily AND ap.amprocnum = 2
         WHERE oc.opcdefault AND oc.opcintype = CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE t.oid END)
FROM pg_attribute a
JOIN pg_type d ON d.oid = a.atttypid
JOIN pg_type t ON t.oid = CASE WHEN d.typtype = 'd' THEN d.typbasetype ELSE d.oid END
WHERE a.attrelid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass AND a.attnum > 0 AND NOT a.attisdropped
"""


def digest_query(conn: psycopg.Connection, template: str, schema: str, table: str) -> sql.Composed:
    """A digest query over a table's columns in name order (as the job's digest orders them).

    Columns of a type without an extended hash function (tsvector, json, ...) enter as text.
    """
    columns = sorted(conn.execute(_HASHABLE_COLUMNS, (schema, table)).fetchall())
    row = sql.SQL("ROW({})").format(sql.SQL(", ").join(
        sql.Identifier("t", name) if hashable else sql.SQL("{}::text").format(sql.Identifier("t", name))
        for name, hashable in columns))
    return sql.SQL(template).format(row=row, table=sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table)))


def analyze_seconds(session: Session, database: str) -> float:
    started = time.monotonic()
    with session.target_connection(database) as conn:
        conn.execute("ANALYZE")
    return time.monotonic() - started


def command_seconds(argv: list[str], repeats: int = 3) -> float:
    """Best of a few start-ups (the first may pay for a cold file cache)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.monotonic()
        subprocess.run(argv, check=True, capture_output=True)
        best = min(best, time.monotonic() - started)
    return best
