"""The stream engine end to end: rows by COPY from the held snapshot into staging, real clusters and runs."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import dagster as dg
import psycopg
import pytest

from wehub_backup.backup import load, verify
from wehub_backup.backup import plan as backup_plan
from wehub_backup.definitions import build_definitions
from wehub_backup.defs.assets import backup_copy_asset_key
from wehub_backup.defs.backup.config import backup_run_config
from wehub_backup.defs.egress import egress_usage
from wehub_backup.defs.names import BACKUP_JOB
from wehub_backup.errors import LockConflict
from wehub_backup.pg.clients import choose_client
from wehub_backup.pg.connection import APPLICATION_NAME, ConnectionInfo
from wehub_backup.pg.digests import TableFingerprint, TakenDigests, summed, table_digest
from wehub_backup.pg.dump import HeldSnapshot
from wehub_backup.pg.fingerprint import fingerprint_database
from wehub_backup.pg.passfile import PassEntry, write_private_passfile
from wehub_backup.pg.processes import run_tool
from wehub_backup.pg.relay import relayed_connection
from wehub_backup.pg.snapshot import export_locked_snapshot
from wehub_backup.pg.stream import (
    LostConnectionRetries,
    SourceReader,
    StatementFailed,
    connection_lost,
    raise_first_failure,
)
from wehub_backup.pg.streamed_tables import StreamedTable, copy_ranges, exclude_table_data_arguments, streamed_tables
from wehub_backup.pg.toc import archive_listing
from wehub_backup.procfs import live_group_members
from wehub_backup.run.targets import previous_name, staging_name
from wehub_backup_tests.faults.evidence import (
    STREAM_READS,
    STREAM_WRITES,
    database_state,
    run_sessions_copying,
    step_failure,
    wait_for_run_sessions_to_end,
)
from wehub_backup_tests.faults.process import stopped_pid
from wehub_backup_tests.faults.relay import FaultRelay
from wehub_backup_tests.faults.sources import blobs_sql, recreate_source
from wehub_backup_tests.harness.cluster import LOOPBACK, PostgresCluster, find_newer_postgres_bindir, free_tcp_port
from wehub_backup_tests.harness.supabase_like import APP_OWNER
from wehub_backup_tests.support.backup_runs import databases_named, step_errors
from wehub_backup_tests.support.environment import VPS_SUPERUSER, BackupEnv
from wehub_backup_tests.support.filesystems import tmpfs_on
from wehub_backup_tests.support.polling import wait_until

LOAD_STEP = "restore_into_staging_database"
# Names pg_dump patterns and SQL must both take literally.
ODD_TABLES = ('Odd "Name".with.dots', "spaces and * stars?", "MixedCase")
STREAMED_SCHEMA = "Streamed.Schema"
STREAMED_SQL = f"""
CREATE SCHEMA "{STREAMED_SCHEMA}";
CREATE TABLE "{STREAMED_SCHEMA}"."Odd ""Name"".with.dots" (id serial PRIMARY KEY, v text);
INSERT INTO "{STREAMED_SCHEMA}"."Odd ""Name"".with.dots" (v) SELECT 'odd ' || i FROM generate_series(1, 200) i;
CREATE TABLE "{STREAMED_SCHEMA}"."spaces and * stars?" (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at timestamptz, span interval, price numeric, f float8, tags text[], raw bytea);
INSERT INTO "{STREAMED_SCHEMA}"."spaces and * stars?" (at, span, price, f, tags, raw)
  SELECT '2024-01-01'::timestamptz + i * interval '1 hour', i * interval '1 minute', i / 7.0, i / 3.0,
         ARRAY['a' || i, 'b'], decode(md5(i::text), 'hex')
  FROM generate_series(1, 300) i;
CREATE TABLE "{STREAMED_SCHEMA}"."MixedCase" (id int PRIMARY KEY, a int NOT NULL,
  doubled int GENERATED ALWAYS AS (a * 2) STORED);
INSERT INTO "{STREAMED_SCHEMA}"."MixedCase" (id, a) SELECT i, i FROM generate_series(1, 100) i;
CREATE TABLE "{STREAMED_SCHEMA}".wide (id serial PRIMARY KEY, body text NOT NULL);
INSERT INTO "{STREAMED_SCHEMA}".wide (body) SELECT repeat(md5(i::text), 8) FROM generate_series(1, 20000) i;
CREATE INDEX wide_body_start ON "{STREAMED_SCHEMA}".wide (left(body, 12)) WHERE id % 2 = 0;
ALTER TABLE "{STREAMED_SCHEMA}".wide ADD CONSTRAINT wide_body_unique UNIQUE (body);
CREATE TABLE "{STREAMED_SCHEMA}".wide_refs (id int PRIMARY KEY, wide_id int NOT NULL REFERENCES "{STREAMED_SCHEMA}".wide);
INSERT INTO "{STREAMED_SCHEMA}".wide_refs SELECT i, i * 3 FROM generate_series(1, 500) i;
CREATE TABLE "{STREAMED_SCHEMA}".parted (id int, k text, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
CREATE TABLE "{STREAMED_SCHEMA}".parted_a PARTITION OF "{STREAMED_SCHEMA}".parted FOR VALUES IN ('a');
CREATE TABLE "{STREAMED_SCHEMA}".parted_b (id int NOT NULL, k text NOT NULL);
ALTER TABLE "{STREAMED_SCHEMA}".parted ATTACH PARTITION "{STREAMED_SCHEMA}".parted_b FOR VALUES IN ('b');
CREATE INDEX parted_k ON "{STREAMED_SCHEMA}".parted (k, id);
CREATE UNIQUE INDEX parted_b_only ON "{STREAMED_SCHEMA}".parted_b (id) INCLUDE (k);
INSERT INTO "{STREAMED_SCHEMA}".parted SELECT i, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 400) i;
CREATE TABLE "{STREAMED_SCHEMA}".bookings (id int, during tstzrange, code text,
  CONSTRAINT no_overlap EXCLUDE USING gist (during WITH &&),
  CONSTRAINT code_once UNIQUE NULLS NOT DISTINCT (code), CONSTRAINT id_later UNIQUE (id) DEFERRABLE INITIALLY DEFERRED);
CREATE UNIQUE INDEX bookings_id ON "{STREAMED_SCHEMA}".bookings (id);
ALTER TABLE "{STREAMED_SCHEMA}".bookings ALTER COLUMN id SET NOT NULL;
ALTER TABLE "{STREAMED_SCHEMA}".bookings REPLICA IDENTITY USING INDEX bookings_id;
ALTER TABLE "{STREAMED_SCHEMA}".bookings CLUSTER ON no_overlap;
INSERT INTO "{STREAMED_SCHEMA}".bookings SELECT i, tstzrange('2024-01-01'::timestamptz + i * interval '1 day',
  '2024-01-01'::timestamptz + (i + 1) * interval '1 day'), 'c' || i FROM generate_series(1, 300) i;
CREATE TABLE "{STREAMED_SCHEMA}".booking_codes (code text REFERENCES "{STREAMED_SCHEMA}".bookings (code));
INSERT INTO "{STREAMED_SCHEMA}".booking_codes SELECT 'c' || i FROM generate_series(1, 30) i;
CREATE TYPE "{STREAMED_SCHEMA}".mood AS ENUM ('calm', 'very calm');
CREATE TABLE "{STREAMED_SCHEMA}".moods (id int PRIMARY KEY, mood "{STREAMED_SCHEMA}".mood);
INSERT INTO "{STREAMED_SCHEMA}".moods
  SELECT i, (CASE WHEN i % 2 = 0 THEN 'calm' ELSE 'very calm' END)::"{STREAMED_SCHEMA}".mood
  FROM generate_series(1, 50) i;
CREATE TABLE "{STREAMED_SCHEMA}".documents (id int PRIMARY KEY, blob oid);
INSERT INTO "{STREAMED_SCHEMA}".documents VALUES (1, lo_from_bytea(0, 'a large object, streamed around'));
"""


def run_stream_backup(target: str, instance: dg.DagsterInstance, engine: str = "stream") -> dg.ExecuteInProcessResult:
    run_config = backup_run_config(target)
    run_config["ops"]["plan_supabase_backup"]["config"]["copy_engine"] = engine
    return build_definitions().get_job_def(BACKUP_JOB).execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False)


def load_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    [output] = [event.step_output_data.metadata for event in result.all_events
                if event.is_successful_output and event.step_key == LOAD_STEP]
    return {name: entry.value for name, entry in output.items()}


def contents(cluster: PostgresCluster, dbname: str, schema: str) -> dict[str, list[tuple]]:
    """Every table of ``schema``, its rows as text in order."""
    tables = [row[0] for row in cluster.query(
        "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_tables WHERE schemaname = %s ORDER BY 1",
        (schema,), dbname=dbname)]
    return {table: cluster.query(f"SELECT r::text FROM {table} AS r ORDER BY r::text", dbname=dbname)
            for table in tables}


@pytest.fixture
def streamed_source(supabase_cluster: PostgresCluster) -> Iterator[str]:
    """The Supabase-shaped source with a schema of tables the stream engine finds hard."""
    supabase_cluster.execute(STREAMED_SQL, user=APP_OWNER)
    yield STREAMED_SCHEMA
    supabase_cluster.execute(f'SELECT lo_unlink(blob) FROM "{STREAMED_SCHEMA}".documents;'
                             f'DROP SCHEMA "{STREAMED_SCHEMA}" CASCADE', user=APP_OWNER)


def test_stream_engine_copies_verifies_swaps_and_keeps_previous(
    backup_env: BackupEnv, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster, streamed_source: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEHUB_BACKUP_COPY_RANGE_MB", "1")  # the larger tables go in page ranges
    monkeypatch.setattr(load, "EARLY_INDEXES_FROM_BYTES", 1)  # every table with rows has its indexes built as it lands
    monkeypatch.setattr(backup_plan, "LANDED_DIGEST_FROM_BYTES", 1)  # and is digested on both sides then
    first = run_stream_backup("wehub_stream", instance)
    assert first.success, step_errors(first)

    plan = first.output_for_node("plan_supabase_backup")
    assert plan.copy_engine == "stream"
    metadata = load_metadata(first)
    restored = first.output_for_node(LOAD_STEP)
    assert restored.stream.ranges > len(restored.stream.binary_tables + restored.stream.text_tables)
    assert metadata["egress_bytes"] == restored.copy_egress_bytes > restored.stream.bytes > 0
    assert metadata["rows_copied"] == restored.stream.rows >= 100_000
    assert metadata["copy_workers"] >= 1 and metadata["copy_retries"] == 0
    assert {"pre-data_s", "copy_s", "copy-indexes_s", "data_s", "post-data_s"} <= set(metadata)
    # wide's primary key, unique constraint and partial expression index, built during the copy; the
    # foreign key into it (and the small tables' keys) after it, in the post-data section.
    early = [record.user_message for record in instance.all_logs(first.run_id)
             if record.user_message.startswith(f"{STREAMED_SCHEMA}.wide: ") and "indexes" in record.user_message]
    assert len(early) == 1 and "3 indexes and key constraints built as soon as its rows were in" in early[0], early
    assert restored.phase_seconds["copy-indexes"] > 0
    # wide's digests were taken as it landed, on the source (the dump left them owed) and in staging,
    # cut by its key: the verification compared them (the run passed, so staging's were taken after
    # its last range) and records them, reading it no more.
    wide = f"{STREAMED_SCHEMA}.wide"
    dump = first.output_for_node("dump_supabase_database")
    landed, verified = restored.landed_digests, first.output_for_node("verify_restored_database")
    assert wide in dump.held.digests_owed and wide not in dump.fingerprint.tables
    assert landed.of_source[wide].rows == 20_000 == verified.fingerprint.tables[wide].rows
    staged = landed.of_staging[wide]
    assert staged.bounds is not None and verified.bounds[wide] == staged.bounds
    assert verified.fingerprint.chunks[wide] is staged.parts
    logged = [record.user_message for record in instance.all_logs(first.run_id)]
    assert {f"{wide}: digested {where} as soon as its rows were in" for where in ("on the source", "in staging")} \
        <= {line.split(" (")[0] for line in logged}
    assert metadata["copy-digests_s"] > 0 and len(landed.of_staging) >= len(ODD_TABLES) + 1
    assert set(dump.held.digests_owed) == set(landed.of_source)
    # Same major version: binary for a table of built-in types with bytea; text for the others (no larger than
    # binary without bytea) and for a table with an enum (its OIDs differ between servers).
    binary, text = restored.stream.binary_tables, restored.stream.text_tables
    assert f"{STREAMED_SCHEMA}.spaces and * stars?" in binary
    assert {f"{STREAMED_SCHEMA}.{name}" for name in ('Odd "Name".with.dots', "MixedCase", "wide", "moods")} <= set(text)
    # The dump carried no streamed rows: its archive is the schema, sequences and large objects.
    assert dump.artifact_bytes < 2_000_000 < restored.stream.bytes

    assert contents(vps_cluster, "wehub_stream", STREAMED_SCHEMA) == contents(
        supabase_cluster, "postgres", STREAMED_SCHEMA)
    keys_and_indexes = ("SELECT conname, pg_get_constraintdef(oid, true) FROM pg_constraint "
                        "WHERE connamespace = %s::regnamespace "
                        "UNION ALL SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
                        "UNION ALL SELECT c.relname, format('clustered %%s, replica identity %%s, valid %%s', "
                        "i.indisclustered, i.indisreplident, i.indisvalid) FROM pg_index i "
                        "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = %s::regnamespace ORDER BY 1, 2")
    schema_name = f'"{STREAMED_SCHEMA}"'
    names = (schema_name, STREAMED_SCHEMA, schema_name)
    assert vps_cluster.query(keys_and_indexes, names, dbname="wehub_stream") == \
        supabase_cluster.query(keys_and_indexes, names)
    generated = vps_cluster.query(f'SELECT count(*) FROM "{STREAMED_SCHEMA}"."MixedCase" WHERE doubled = a * 2',
                                  dbname="wehub_stream")
    assert generated == [(100,)]
    large_object = f'SELECT convert_from(lo_get(blob), \'UTF8\') FROM "{STREAMED_SCHEMA}".documents'
    assert vps_cluster.query(large_object, dbname="wehub_stream") == [("a large object, streamed around",)]
    sequence = f"SELECT last_value FROM \"{STREAMED_SCHEMA}\".\"Odd \"\"Name\"\".with.dots_id_seq\""
    assert vps_cluster.query(sequence, dbname="wehub_stream") == supabase_cluster.query(sequence) == [(200,)]
    events = "SELECT count(*), sum(id) FROM public.events"
    assert vps_cluster.query(events, dbname="wehub_stream") == supabase_cluster.query(events)
    assert not list(backup_env.backup_dir.glob("run-*"))

    second = run_stream_backup("wehub_stream", instance)
    assert second.success, step_errors(second)
    assert databases_named(vps_cluster, "wehub_stream") == {"wehub_stream", previous_name("wehub_stream")}
    assert not supabase_cluster.query("SELECT 1 FROM pg_stat_activity WHERE application_name = %s",
                                      (APPLICATION_NAME,))


def test_a_source_digest_the_copy_owed_and_did_not_take_fails_the_verification(
    backup_env: BackupEnv, instance: dg.DagsterInstance, vps_cluster: PostgresCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dump leaves the large tables' source digests to the copy; a copy that lands a table without
    taking its digest (a fault of the run itself: a mock) must not pass the verification."""
    monkeypatch.setattr(backup_plan, "LANDED_DIGEST_FROM_BYTES", 1)
    monkeypatch.setattr(verify.DigestsAsTablesLand, "source_side", lambda self, table, stopping: None)
    result = run_stream_backup("wehub_stream_owed", instance)
    assert not result.success
    step, message = step_failure(result)
    assert step == "verify_restored_database"
    assert re.fullmatch(r"verification failed: table \S+: its digest on the source was not taken during the copy"
                        r"( \(and \d+ more\))?", message), message
    assert not databases_named(vps_cluster, "wehub_stream_owed")


def test_an_inherited_tables_digests_wait_for_the_tables_that_inherit_it(
    backup_env: BackupEnv, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A digest reads a table with the rows of the tables inheriting it, which may land after it: so
    an inherited table is digested by the dump and the verification, as its heirs land no digest
    of it is taken; the tables that inherit nothing are digested as they land."""
    monkeypatch.setattr(backup_plan, "LANDED_DIGEST_FROM_BYTES", 1)
    monkeypatch.setattr(load, "EARLY_INDEXES_FROM_BYTES", 1)
    supabase_cluster.execute(
        "CREATE SCHEMA heirs; CREATE TABLE heirs.parent (id int PRIMARY KEY, v text);"
        "CREATE TABLE heirs.child (extra int) INHERITS (heirs.parent);"
        "INSERT INTO heirs.parent SELECT i, repeat('p', 200) FROM generate_series(1, 2000) i;"
        "INSERT INTO heirs.child SELECT i, 'c', i FROM generate_series(1, 3) i", user=APP_OWNER)
    try:
        result = run_stream_backup("wehub_stream_heirs", instance)
        assert result.success, step_errors(result)
        owed = result.output_for_node("dump_supabase_database").held.digests_owed
        landed = result.output_for_node(LOAD_STEP).landed_digests
        assert "heirs.parent" not in owed | landed.of_staging.keys()
        assert {"heirs.child"} <= owed & landed.of_source.keys() & landed.of_staging.keys()
        verified = result.output_for_node("verify_restored_database").fingerprint.tables
        assert (verified["heirs.parent"].rows, verified["heirs.child"].rows) == (2003, 3)
    finally:
        supabase_cluster.execute("DROP SCHEMA heirs CASCADE", user=APP_OWNER)


def test_bad_engine_value_is_refused_in_one_line_before_anything_changes(
    backup_env: BackupEnv, instance: dg.DagsterInstance, vps_cluster: PostgresCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEHUB_BACKUP_COPY_ENGINE", "streaming")
    from_setting = run_stream_backup("wehub_stream_bad", instance, engine="")
    from_config = run_stream_backup("wehub_stream_bad", instance, engine="fast")

    for result, cause in ((from_setting, "WEHUB_BACKUP_COPY_ENGINE must be 'stream' or 'archive', not 'streaming'"),
                          (from_config, "copy_engine (the run's config) must be 'stream' or 'archive', not 'fast'")):
        assert not result.success
        step, message = step_failure(result)
        assert step == "plan_supabase_backup"
        assert message == f"{cause}; nothing was changed"
    assert not databases_named(vps_cluster, "wehub_stream_bad")
    assert not list(backup_env.backup_dir.glob("run-*"))


@pytest.fixture
def blob_source(supabase_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch,
                backup_env: BackupEnv) -> Iterator[str]:
    """A source of incompressible bytea (4 MB) and a table of plain rows, alone in its database."""
    name = recreate_source(supabase_cluster, "stream_blobs", blobs_sql(256, 16384) + (
        "CREATE TABLE public.notes (id serial PRIMARY KEY, body text NOT NULL);"
        "INSERT INTO public.notes (body) SELECT repeat(md5(i::text), 4) FROM generate_series(1, 40000) i;"))
    monkeypatch.setenv("SUPABASE_DB_NAME", name)
    yield name
    supabase_cluster.drop_database(name)


def test_binary_copy_of_bytea_costs_about_its_size_in_egress(
    blob_source: str, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster,
) -> None:
    result = run_stream_backup("wehub_stream_blobs", instance)
    assert result.success, step_errors(result)
    restored = result.output_for_node(LOAD_STEP)
    assert restored.stream.binary_tables == ["public.blobs"] and restored.stream.text_tables == ["public.notes"]
    data_bytes = supabase_cluster.query(
        "SELECT (SELECT sum(octet_length(data)) FROM public.blobs) + (SELECT sum(octet_length(body) + 4) "
        "FROM public.notes)", dbname=blob_source)[0][0]
    assert data_bytes < restored.copy_egress_bytes < 1.1 * data_bytes
    # The budget counts both steps' egress: the schema dump's and the copy's.
    dump = result.output_for_node("dump_supabase_database")
    assert egress_usage(instance).used_bytes == dump.egress_bytes + restored.copy_egress_bytes
    [materialization] = instance.fetch_materializations(backup_copy_asset_key("wehub_stream_blobs"), limit=5).records
    assert materialization.asset_materialization.metadata["egress_bytes"].value == \
        dump.egress_bytes + restored.copy_egress_bytes
    assert contents(vps_cluster, "wehub_stream_blobs", "public") == contents(supabase_cluster, blob_source, "public")


def test_large_objects_larger_than_the_free_space_are_refused_before_the_dump(
    supabase_cluster: PostgresCluster, vps_cluster: PostgresCluster, instance: dg.DagsterInstance,
    backup_env: BackupEnv, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stream engine's dump holds no rows, but it holds every large object: 80 MiB of them do
    not fit beside the schema's slack on a 96 MiB disk (even at half their size, compressed), and the plan
    says so."""
    name = recreate_source(supabase_cluster, "stream_large_objects", (
        "CREATE TABLE public.scans (id int PRIMARY KEY, body oid NOT NULL);"
        "WITH scan AS (SELECT decode(string_agg(md5(j::text), '' ORDER BY j), 'hex') AS body"
        "              FROM generate_series(1, 65536) j)"  # 1 MiB that does not compress, stored 80 times
        "INSERT INTO public.scans SELECT i, lo_from_bytea(0, scan.body) FROM scan, generate_series(1, 80) i;"))
    monkeypatch.setenv("SUPABASE_DB_NAME", name)
    try:
        with tmpfs_on(backup_env.backup_dir, "96m"):
            result = run_stream_backup("wehub_stream_large_objects", instance)
    finally:
        supabase_cluster.drop_database(name)
    step, cause = step_failure(result)
    assert step == "plan_supabase_backup"
    assert cause.startswith("not enough free space in ") and \
        "MiB needed for the schema dump and the large objects" in cause, cause
    assert not databases_named(vps_cluster, "wehub_stream_large_objects")


def test_source_and_vps_of_different_major_versions_copy_in_text(
    backup_env_pg17: BackupEnv, instance: dg.DagsterInstance, supabase17_cluster: PostgresCluster,
    vps_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEHUB_PG_BINDIRS", str(find_newer_postgres_bindir()))  # pg_restore 17's script into 15
    result = run_stream_backup("wehub_stream_17", instance)
    assert result.success, step_errors(result)
    restored = result.output_for_node(LOAD_STEP)
    assert restored.stream.text_tables and not restored.stream.binary_tables
    for query in ("SELECT count(*), sum(id) FROM public.events", "SELECT * FROM public.weird_values ORDER BY 1"):
        as_text = f"SELECT r::text FROM ({query}) AS r"
        assert vps_cluster.query(as_text, dbname="wehub_stream_17") == supabase17_cluster.query(as_text), query


# --- faults ----------------------------------------------------------------------------------


class FaultSource(NamedTuple):
    name: str
    relay: FaultRelay  # between the run and the source

    def made_unpaced(self, target: str, instance: dg.DagsterInstance) -> None:
        """A good copy of the source in ``target`` as a fault finds it, made at full speed (archive engine)."""
        pace, self.relay.bytes_per_second = self.relay.bytes_per_second, None
        try:
            made = run_stream_backup(target, instance, engine="archive")
        finally:
            self.relay.bytes_per_second = pace
        assert made.success, step_errors(made)


@pytest.fixture
def fault_source(supabase_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch, backup_env: BackupEnv,
                 tmp_path: Path) -> Iterator[FaultSource]:
    """A source whose one table (about 12 MB, in ranges of 4 MB) takes seconds to copy: the run
    reaches it through a relay that paces each connection."""
    name = recreate_source(supabase_cluster, "stream_faults", (
        "CREATE TABLE public.notes (id serial PRIMARY KEY, body text NOT NULL);"
        "INSERT INTO public.notes (body) SELECT repeat(md5(i::text), 8) FROM generate_series(1, 40000) i;"))
    with FaultRelay(supabase_cluster.port, bytes_per_second=1_500_000) as relay:
        monkeypatch.setenv("SUPABASE_DB_HOST", LOOPBACK)
        monkeypatch.setenv("SUPABASE_DB_PORT", str(relay.port))
        monkeypatch.setenv("PGPASSFILE", str(write_private_passfile(tmp_path / "relay.pgpass", [
            PassEntry(LOOPBACK, str(relay.port), "*", APP_OWNER, backup_env.supabase_password),
            PassEntry(backup_env.local_host, str(backup_env.local_port), "*", VPS_SUPERUSER,
                      backup_env.local_password)])))
        monkeypatch.setenv("SUPABASE_DB_NAME", name)
        monkeypatch.setenv("WEHUB_BACKUP_COPY_RANGE_MB", "4")
        yield FaultSource(name, relay)
    supabase_cluster.drop_database(name)


def snapshot_backend(cluster: PostgresCluster) -> int | None:
    """The run's session that holds the snapshot: the oldest transaction of the run on the source."""
    rows = cluster.query("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND xact_start IS NOT NULL "
                         "ORDER BY xact_start LIMIT 1", (APPLICATION_NAME,))
    return rows[0][0] if rows else None


class OnceCopying:
    """Runs ``fault`` (once, given their pids) as soon as copy workers are reading from the source."""

    def __init__(self, cluster: PostgresCluster, fault: Callable[[list[int]], object]) -> None:
        self.cluster, self.fault, self.fired = cluster, fault, threading.Event()
        self._done = threading.Event()
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> OnceCopying:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join(10)

    def _watch(self) -> None:
        try:
            while not self._done.wait(0.01):
                if copying := run_sessions_copying(self.cluster, STREAM_READS):
                    self.fault(copying)
                    self.fired.set()
                    return
        except Exception as error:  # noqa: BLE001 - shown by the test's assertion
            self.error = error
            raise


@pytest.mark.parametrize("side", ["source", "staging"])
def test_a_worker_whose_connection_drops_copies_its_range_again(
    side: str, fault_source: FaultSource, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster,
) -> None:
    def cut_one_worker(workers: list[int]) -> None:
        if side == "source":  # cut on the way, while the relay still paces what the server sent
            [(port,)] = supabase_cluster.query("SELECT client_port FROM pg_stat_activity WHERE pid = %s", (workers[0],))
            fault_source.relay.cut_client_of(port)
            return
        writer = run_sessions_copying(vps_cluster, STREAM_WRITES)[0]
        vps_cluster.query("SELECT pg_terminate_backend(%s)", (writer,))

    with OnceCopying(supabase_cluster, cut_one_worker) as watcher:
        result = run_stream_backup("wehub_stream_faults", instance)
    assert watcher.fired.is_set(), watcher.error
    assert result.success, step_errors(result)
    assert result.output_for_node(LOAD_STEP).stream.retries >= 1
    retried = [record.user_message for record in instance.all_logs(result.run_id)
               if "connection lost" in record.user_message and "(attempt 2 of 3)" in record.user_message]
    assert retried, "the retry was not logged"
    source_rows = contents(supabase_cluster, fault_source.name, "public")
    assert contents(vps_cluster, "wehub_stream_faults", "public") == source_rows


def test_a_range_whose_statement_fails_on_a_live_connection_is_not_copied_again(
    fault_source: FaultSource, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster,
) -> None:
    """A staging statement cancelled (as an operator's pg_cancel_backend, the VPS's disk full or an
    out-of-memory error end one) ends the run at once: every attempt would fail alike, and each would
    read the range from the source again, at Supabase's egress."""
    target = "wehub_stream_cancelled"

    def cancel_one_write(workers: list[int]) -> None:
        vps_cluster.query("SELECT pg_cancel_backend(%s)", (run_sessions_copying(vps_cluster, STREAM_WRITES)[0],))

    with OnceCopying(supabase_cluster, cancel_one_write) as watcher:
        result = run_stream_backup(target, instance)
    assert watcher.fired.is_set(), watcher.error
    step, cause = step_failure(result)
    assert step == LOAD_STEP, cause
    assert "canceling statement due to user request" in cause, cause
    assert not [record for record in instance.all_logs(result.run_id) if "copying it again" in record.user_message]
    assert not databases_named(vps_cluster, target)


def test_a_reader_tells_a_failed_statement_from_a_lost_connection(
    supabase_cluster: PostgresCluster, backup_env: BackupEnv, tmp_path: Path,
) -> None:
    """psql's own exit status says which: a statement that failed on a live connection is not worth
    a second attempt (it would fail alike); a connection that could not be made or went may be. The
    error is the server's line either way."""
    psql = str(choose_client(15, []).program("psql"))
    passfile = write_private_passfile(tmp_path / "reader.pgpass", [
        PassEntry(LOOPBACK, str(supabase_cluster.port), "*", APP_OWNER, backup_env.supabase_password)])
    env = {"PGHOST": LOOPBACK, "PGUSER": APP_OWNER, "PGDATABASE": "postgres", "PGPASSFILE": str(passfile),
           "PGCONNECT_TIMEOUT": "5"}
    failures = {}
    for case, port, statement in (("statement", supabase_cluster.port, "COPY (SELECT 1 / 0) TO STDOUT"),
                                  ("connection", free_tcp_port(), "COPY (SELECT 1) TO STDOUT")):
        reader = SourceReader(psql, {**env, "PGPORT": str(port)}, "UTF8", 5, supabase_cluster.major * 10000)
        with pytest.raises(psycopg.OperationalError) as failed, reader.open(None, statement) as out:
            list(out.blocks())
            out.check()
        failures[case] = failed.value
    assert isinstance(failures["statement"], StatementFailed), failures
    assert str(failures["statement"]) == "ERROR:  division by zero"
    assert not connection_lost(failures["statement"]) and connection_lost(failures["connection"])
    assert "Connection refused" in str(failures["connection"]), failures


def test_a_worker_never_writes_into_a_staging_database_another_run_made(
    fault_source: FaultSource, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster,
) -> None:
    """Mid-copy, staging is dropped and a namesake created (as a run that took a lost lock would):
    the worker whose connection went with it does not copy its range into the namesake."""
    target = "wehub_stream_replaced"
    staging = staging_name(target)

    def replace_staging(workers: list[int]) -> None:
        vps_cluster.fresh_database(staging)

    try:
        with OnceCopying(supabase_cluster, replace_staging) as watcher:
            result = run_stream_backup(target, instance)
        assert watcher.fired.is_set(), watcher.error
        step, cause = step_failure(result)
        assert step == LOAD_STEP
        assert cause.startswith(f"{staging} on the VPS is no longer the database this run created"), cause
        # The namesake carries no mark of the project: the failed run leaves it, empty, to its owner.
        assert vps_cluster.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", dbname=staging) == [(0,)]
        assert not databases_named(vps_cluster, target) - {staging}
    finally:
        vps_cluster.drop_database(staging)


def test_an_incremental_run_whose_source_connection_drops_copies_its_changed_chunks_again(
    fault_source: FaultSource, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster,
) -> None:
    target = "wehub_stream_incr_faults"
    fault_source.made_unpaced(target, instance)
    supabase_cluster.execute("UPDATE public.notes SET body = upper(body) WHERE id > 25000", dbname=fault_source.name)

    def cut_one_worker(workers: list[int]) -> None:
        [(port,)] = supabase_cluster.query("SELECT client_port FROM pg_stat_activity WHERE pid = %s", (workers[0],))
        fault_source.relay.cut_client_of(port)

    run_config = backup_run_config(target, mode="incremental")
    with OnceCopying(supabase_cluster, cut_one_worker) as watcher:
        result = build_definitions().get_job_def(BACKUP_JOB).execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False)
    assert watcher.fired.is_set(), watcher.error
    assert result.success, step_errors(result)
    restored = result.output_for_node(LOAD_STEP)
    assert result.output_for_node("plan_supabase_backup").mode == "incremental"
    assert restored.stream.retries >= 1
    assert 0 < restored.increment.chunks_copied < restored.increment.chunks_compared
    # Staging was a file copy of the current copy: the retried range's rows were deleted and written again.
    assert restored.stream.rows_from_copy == 0 and 0 < restored.stream.rows < 20_000
    assert contents(vps_cluster, target, "public") == contents(supabase_cluster, fault_source.name, "public")


def test_losing_the_snapshot_session_fails_the_run_and_leaves_the_copies_alone(
    fault_source: FaultSource, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster,
) -> None:
    target = "wehub_stream_lost"
    for _ in range(2):  # a target and its __previous
        fault_source.made_unpaced(target, instance)
    before = {name: database_state(vps_cluster, name) for name in (target, previous_name(target))}

    def cut_snapshot_session(workers: list[int]) -> None:
        supabase_cluster.query("SELECT pg_terminate_backend(%s)", (snapshot_backend(supabase_cluster),))

    with OnceCopying(supabase_cluster, cut_snapshot_session) as watcher:
        result = run_stream_backup(target, instance)
    assert watcher.fired.is_set(), watcher.error
    assert not result.success
    step, cause = step_failure(result)
    assert step == LOAD_STEP
    assert cause.startswith("the run's snapshot session on the source was lost") and "\n" not in cause
    wait_for_run_sessions_to_end(vps_cluster)
    assert staging_name(target) not in databases_named(vps_cluster, target)
    assert {name: database_state(vps_cluster, name) for name in before} == before
    wait_for_run_sessions_to_end(supabase_cluster)


def test_a_source_that_stops_sending_mid_copy_fails_as_stalled(
    fault_source: FaultSource, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEHUB_STALL_TIMEOUT_SECONDS", "3")
    with OnceCopying(supabase_cluster, lambda workers: fault_source.relay.stop_forwarding(20)) as watcher:
        result = run_stream_backup("wehub_stream_stalled", instance)
    assert watcher.fired.is_set(), watcher.error
    step, cause = step_failure(result)
    assert step == LOAD_STEP
    assert cause.startswith("no data from the source for 3 s on an open connection"), cause
    assert not databases_named(vps_cluster, "wehub_stream_stalled")


def test_an_interrupt_mid_copy_closes_the_snapshot_and_drops_staging(
    fault_source: FaultSource, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster,
) -> None:
    with OnceCopying(supabase_cluster, lambda workers: os.kill(os.getpid(), signal.SIGINT)) as watcher:
        result = run_stream_backup("wehub_stream_interrupted", instance)
    assert watcher.fired.is_set(), watcher.error
    step, cause = step_failure(result)
    assert step == LOAD_STEP and "interrupted by SIGINT" in cause, cause
    wait_for_run_sessions_to_end(supabase_cluster)  # the snapshot's session and the workers' are gone
    assert not databases_named(vps_cluster, "wehub_stream_interrupted")

# --- a table's own indexes, built as soon as its rows are in -------------------------------------

INDEXED_SQL = """
CREATE TABLE t (id int PRIMARY KEY, v text UNIQUE, parent int REFERENCES t);
CREATE INDEX t_parent ON t (parent);
INSERT INTO t SELECT i, i::text FROM generate_series(1, 1000) i;
CREATE TABLE empty (id int PRIMARY KEY);
"""


def stopped_behind_a_lock(cluster: PostgresCluster, dbname: str, lock: str,
                          work: Callable[[threading.Event], object]) -> str:
    """The error of ``work`` waiting behind ``lock`` (held by another session) once its stop is asked."""
    stopping, failures = threading.Event(), []
    with cluster.connect(dbname) as holder, holder.transaction():
        holder.execute(lock)
        worker = threading.Thread(target=lambda: failures.append(pytest.raises(psycopg.OperationalError, work, stopping)))
        worker.start()
        wait_until(lambda: cluster.query("SELECT 1 FROM pg_stat_activity WHERE datname = %s AND "
                                         "wait_event_type = 'Lock'", (dbname,)), "work waiting for a lock", 30)
        stopping.set()
        worker.join(30)
    assert not worker.is_alive() and len(failures) == 1
    return str(failures[0].value)


def own_keys_and_indexes(cluster: PostgresCluster, dbname: str) -> set[str]:
    return {row[0] for row in cluster.query(
        "SELECT conname FROM pg_constraint WHERE conrelid IN ('t'::regclass, 'empty'::regclass) "
        "UNION SELECT indexname FROM pg_indexes WHERE tablename IN ('t', 'empty')", dbname=dbname)}


def test_a_tables_own_indexes_build_as_it_lands_and_stop_with_the_copy(
    backup_env: BackupEnv, vps_cluster: PostgresCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real pg_dump and pg_restore: a build held behind a lock stops as soon as the copy is stopped,
    and builds nothing; a free one builds the table's keys and indexes (not its foreign key, which
    reads another table's, nor a table under the size), which the post-data list then leaves out."""
    monkeypatch.setattr(load, "EARLY_INDEXES_FROM_BYTES", 1)  # t has pages, empty none
    source = vps_cluster.fresh_database("wehub_indexes_source")
    staging = vps_cluster.fresh_database("wehub_indexes_staging")
    client = choose_client(vps_cluster.major)
    archive = tmp_path / "schema.dump"
    try:
        vps_cluster.execute(INDEXED_SQL, dbname=source)
        info = ConnectionInfo(vps_cluster.host, vps_cluster.port, VPS_SUPERUSER, source, "disable",
                              backup_env.pgpassfile)
        with info.tool_environment(tmp_path / "vps.pgpass") as env, vps_cluster.connect(source) as conn:
            run_tool([client.program("pg_dump"), "--format=custom", "--schema-only", f"--file={archive}",
                      "--no-password"], env)
            listing = archive_listing(client, archive, env, tmp_path / "listing.txt")
            run_tool([client.program("pg_restore"), "--section=pre-data", f"--dbname={staging}", "--no-password",
                      str(archive)], env)
            tables = {table.name: table for table in streamed_tables(conn, ["public"], [])}

            def pg_restore(path: Path) -> list[str]:
                return [client.program("pg_restore"), f"--dbname={staging}", "--exit-on-error",
                        "--no-password", "--section=post-data", f"--use-list={path}", str(archive)]

            logged: list[str] = []
            indexes = load.IndexesAsTablesLand(pg_restore, tmp_path, listing, env, logged.append, False)
            # COPY's own lock: a copy passes, a build waits
            stopped = stopped_behind_a_lock(vps_cluster, staging, "LOCK TABLE t IN ROW EXCLUSIVE MODE",
                                            lambda stopping: indexes(tables["t"], stopping))
            assert "the copy was stopped while public.t's indexes were built" in stopped
            assert live_group_members(stopped_pid(logged, "pg_restore")) == []
            assert own_keys_and_indexes(vps_cluster, staging) == set() and indexes.built == set()

            for table in tables.values():
                indexes(table, threading.Event())
            assert own_keys_and_indexes(vps_cluster, staging) == {"t_pkey", "t_v_key", "t_parent"}
            [built_line] = [line for line in logged if "built as soon as" in line]
            assert built_line.startswith("public.t: 3 indexes and key constraints built as soon as its rows were in (")
            post_data_list = indexes.post_data_list()
            built = {line for line in listing.splitlines() if re.search(r" (t_pkey|t_v_key|t_parent) ", line)}
            rest = post_data_list.read_text().splitlines()
            assert len(built) == 3 and {f";{line}" for line in built} <= set(rest)
            assert any(re.search(r"^\d+;.* t_parent_fkey ", line) for line in rest)
            run_tool(pg_restore(post_data_list), env)  # the rest: the foreign key, the empty table's key
            assert own_keys_and_indexes(vps_cluster, staging) == {"t_pkey", "t_v_key", "t_parent", "t_parent_fkey",
                                                                   "empty_pkey"}
    finally:
        vps_cluster.drop_database(source)
        vps_cluster.drop_database(staging)


@contextmanager
def held_snapshot_of(info: ConnectionInfo, owed: frozenset[str]) -> Iterator[HeldSnapshot]:
    """A real held snapshot of ``info``'s database, through a relay, its tables locked as a dump's are."""
    with ExitStack() as resources:
        relayed, relay = resources.enter_context(relayed_connection(info))
        session = resources.enter_context(relayed.connect(autocommit=False))
        session.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snapshot, _ = export_locked_snapshot(session, ["public"], [], info.lock_timeout_s, lambda line: None)
        held = HeldSnapshot(snapshot, session, relay, relayed, [], 0, resources.pop_all(), digests_owed=owed)
    try:
        yield held
    finally:
        held.close()


def test_a_large_tables_digests_are_taken_as_it_lands_and_stop_with_the_copy(
    backup_env: BackupEnv, vps_cluster: PostgresCluster,
) -> None:
    """On the source, in the held snapshot (rows written since unseen) and where the dump left the
    digest owed; in staging, chunk by chunk by the key, or whole without one, once the key is final.
    A digest held behind a lock stops as soon as the copy is stopped; one queued behind a session
    asking for the table exclusively gives way, naming it. What is taken equals the verification's
    own reading, which the fingerprint then takes instead of reading the table again."""
    source, staging = (vps_cluster.fresh_database(f"wehub_digests_{side}") for side in ("source", "staging"))
    try:
        for database in (source, staging):
            vps_cluster.execute("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE bare (v text);"
                                "INSERT INTO t SELECT i, i::text FROM generate_series(1, 5000) i;"
                                "INSERT INTO bare SELECT i::text FROM generate_series(1, 300) i", dbname=database)
        [(oid,)] = vps_cluster.query("SELECT oid FROM pg_database WHERE datname = %s", (staging,))
        info = ConnectionInfo(vps_cluster.host, vps_cluster.port, VPS_SUPERUSER, staging, "disable",
                              backup_env.pgpassfile, lock_timeout_s=2)
        with vps_cluster.connect(source) as conn:  # the copy's tables are the source's, by their OIDs there
            tables = {table.name: table for table in streamed_tables(conn, ["public"], [])}
            expected = {name: TableFingerprint(*table_digest(conn, "public", name)) for name in tables}
        logged: list[str] = []
        with held_snapshot_of(replace(info, dbname=source), frozenset({"public.t"})) as held:
            vps_cluster.execute("INSERT INTO t VALUES (0, 'after the snapshot')", dbname=source)

            def taking(keys_final: Callable[[StreamedTable], bool] | None) -> verify.DigestsAsTablesLand:
                return verify.DigestsAsTablesLand(LostConnectionRetries(held, lambda: None, logged.append), info,
                                                  staging, oid, 1, {}, None, keys_final, logged.append)

            digests = taking(lambda table: True)
            stopped = stopped_behind_a_lock(vps_cluster, staging, "LOCK TABLE bare IN ACCESS EXCLUSIVE MODE",
                                            lambda stopping: digests.staging_side(tables["bare"], stopping))
            assert "the copy was stopped while public.bare was digested in staging" in stopped
            assert digests.of_staging == {} and logged == []

            with vps_cluster.connect(source) as app:
                app.execute("SET lock_timeout = '30s'")
                failures: list[object] = []
                altering = threading.Thread(target=lambda: failures.append(pytest.raises(
                    psycopg.errors.QueryCanceled, app.execute, "ALTER TABLE t ADD COLUMN late int")))
                altering.start()
                wait_until(lambda: vps_cluster.query("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                                     "AND query LIKE 'ALTER TABLE t%'"), "an ALTER queued", 30)
                with pytest.raises(LockConflict, match=r"lock conflict on table public\.t: session pid \d+ .* asked "
                                                       r"for ACCESS EXCLUSIVE .* the verification's reading of it"):
                    digests.source_side(tables["t"], threading.Event())
                vps_cluster.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE "
                                    "'ALTER TABLE t%'")
                altering.join(30)
            assert not altering.is_alive() and len(failures) == 1 and digests.of_source == {}

            unkeyed_yet = taking(None)
            for table in tables.values():
                unkeyed_yet.staging_side(table, threading.Event())
                digests.source_side(table, threading.Event())  # the dump digested bare: nothing owed
                digests.staging_side(table, threading.Event())
        assert unkeyed_yet.of_staging == {}
        assert digests.of_source == {"public.t": expected["t"]}  # the snapshot's rows, not the one added since
        keyed, whole = digests.of_staging["public.t"], digests.of_staging["public.bare"]
        assert keyed.bounds is not None and keyed.bounds.key.column == "id" and len(keyed.parts) > 1
        assert whole.bounds is None and whole.parts == {None: expected["bare"]}
        assert sorted(line.split(" as soon as")[0] for line in logged) == [
            "public.bare: digested in staging", "public.t: digested in staging", "public.t: digested on the source"]
        with vps_cluster.connect(staging) as conn:
            assert summed(keyed.parts.values()) == TableFingerprint(*table_digest(conn, "public", "t"))
            read = fingerprint_database(conn, ["public"], [])
            taken = fingerprint_database(conn, ["public"], [], taken=digests.of_staging)
            assert {name: (t.rows, t.digest) for name, t in taken.tables.items()} == \
                {name: (t.rows, t.digest) for name, t in read.tables.items()}
            assert taken.chunks == {"public.t": keyed.parts}
            wrong = fingerprint_database(conn, ["public"], [], owed={"public.bare"}, taken={
                "public.t": TakenDigests(None, {None: TableFingerprint(1, "5")})})
            assert {name: t.rows for name, t in wrong.tables.items()} == {"public.t": 1}
    finally:
        vps_cluster.drop_database(source)
        vps_cluster.drop_database(staging)


def test_a_source_digest_whose_connection_drops_is_read_again_in_the_snapshot(
    backup_env: BackupEnv, vps_cluster: PostgresCluster,
) -> None:
    """The digest's own session ended mid-statement (the server terminating it, as a restart or a
    pooler would): read again in the same snapshot after the retry's checks, costing a digest's few
    bytes, not the copy; the retry is counted and logged."""
    source = vps_cluster.fresh_database("wehub_digests_dropped")
    try:
        vps_cluster.execute("CREATE TABLE big (id int, v text);"
                            "INSERT INTO big SELECT i, md5(i::text) FROM generate_series(1, 2000000) i", dbname=source)
        info = ConnectionInfo(vps_cluster.host, vps_cluster.port, VPS_SUPERUSER, source, "disable",
                              backup_env.pgpassfile)
        with vps_cluster.connect(source) as conn:
            [big] = streamed_tables(conn, ["public"], [])
            expected = TableFingerprint(*table_digest(conn, "public", "big"))
        logged: list[str] = []
        digesting = ("SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                     "AND backend_type = 'client backend' AND query LIKE '%%hash_record_extended%%' "
                     "AND pid <> pg_backend_pid()")
        with held_snapshot_of(info, frozenset({"public.big"})) as held:
            retries, checked = LostConnectionRetries(held, lambda: checked.append(True), logged.append), []
            digests = verify.DigestsAsTablesLand(retries, info, source, 0, 1, {}, None, None, logged.append)
            with ThreadPoolExecutor(1) as side:
                taking = side.submit(digests.source_side, big, threading.Event())
                [(pid,)] = wait_until(lambda: vps_cluster.query(digesting, (source,)), "a digest running", 30,
                                      interval=0.01)
                vps_cluster.query("SELECT pg_terminate_backend(%s)", (pid,))
                taking.result(60)
            assert held.alive()
        assert digests.of_source == {"public.big": expected}
        assert retries.count == 1 and checked == [True]
        [retried] = [line for line in logged if "connection lost" in line]
        assert retried.startswith("digest of public.big on the source: connection lost (")
        assert retried.endswith("); reading it again (attempt 2 of 3)")
    finally:
        vps_cluster.drop_database(source)


# --- the plan of a copy, without a server ------------------------------------------------------


def table(name: str, size_bytes: int) -> StreamedTable:
    return StreamedTable(1, "s", name, size_bytes, 8192, ("id",), True)


def test_large_tables_go_first_and_in_page_ranges_whose_last_is_open() -> None:
    small, large = table("small", 8192), table("large", 10 * 8192)
    ranges = copy_ranges([small, large], range_bytes=4 * 8192, source_major=15)
    assert [(r.table.name, r.first_page, r.end_page, r.whole) for r in ranges] == [
        ("large", 0, 4, False), ("large", 4, 8, False), ("large", 8, None, False), ("small", 0, None, True)]
    assert ranges[1].where().as_string() == " WHERE ctid >= '(4,0)'::tid AND ctid < '(8,0)'::tid"
    assert ranges[2].where().as_string() == " WHERE ctid >= '(8,0)'::tid"
    # Before TID range scans, each table is read whole.
    assert all(r.whole for r in copy_ranges([large], range_bytes=4 * 8192, source_major=13))


def test_a_failed_range_is_raised_without_awaiting_the_work_still_running_before_it() -> None:
    """A range that fails while an earlier-submitted one still runs (a long index build, say)
    fails the copy at once: the caller then stops the others."""
    release = threading.Event()

    def failing() -> None:
        raise psycopg.OperationalError("the range's connection was lost")

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(release.wait, 60), pool.submit(failing)]
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="connection was lost"):
            raise_first_failure(futures)
        assert time.monotonic() - started < 5 and not futures[0].done()
        release.set()


def test_streamed_tables_are_left_out_of_the_dump_by_exact_name() -> None:
    odd = StreamedTable(1, 'My "Schema".x', "a*b?.c", 0, 8192, ("id",), True)
    assert exclude_table_data_arguments([odd]) == ['--exclude-table-data="My ""Schema"".x"."a*b?.c"']
