"""Incremental backups end to end: staging from the current copy, only changed chunks from the source."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from wehub_backup.backup.increment import (
    FULL,
    INCREMENTAL,
    CopiedTable,
    IncrementalCopy,
    IncrementBase,
    decide_mode,
    incremental_tasks,
)
from wehub_backup.definitions import build_definitions
from wehub_backup.defs.backup.config import backup_run_config
from wehub_backup.defs.egress import (
    FIRST_INCREMENTAL_BASIS,
    egress_usage,
    estimate_run_egress,
    format_egress_report,
)
from wehub_backup.defs.names import BACKUP_JOB, MODE_TAG
from wehub_backup.pg.chunks import CHUNK_BYTES, MAX_RANGES, ChunkBounds, ChunkKey, analyze_unanalyzed, chunk_runs
from wehub_backup.pg.digests import ChunkDigests, TableFingerprint, summed
from wehub_backup.pg.fingerprint import DatabaseFingerprint
from wehub_backup.pg.streamed_tables import CopyRange, StreamedTable
from wehub_backup.run.manifest import (
    CopyManifest,
    RecordedTable,
    chunk_record_path,
    manifest_path,
    read_chunks,
    read_manifest,
    record_chunks,
)
from wehub_backup.run.targets import previous_name, staging_name
from wehub_backup.units import human_bytes
from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.harness.supabase_like import APP_OWNER
from wehub_backup_tests.support.backup_runs import databases_named, step_errors
from wehub_backup_tests.support.environment import BackupEnv

SCHEMA = "Incr Schema"
LOAD_STEP, PLAN_STEP, DUMP_STEP = "restore_into_staging_database", "plan_supabase_backup", "dump_supabase_database"
STAGE_STEP = "recreate_staging_database"
INCREMENTAL_SQL = f"""
CREATE SCHEMA "{SCHEMA}";
CREATE TABLE "{SCHEMA}".items (id bigint PRIMARY KEY, body text NOT NULL, at timestamptz NOT NULL);
INSERT INTO "{SCHEMA}".items SELECT i, repeat(md5(i::text), 3), '2024-01-01'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 30000) i;
CREATE TABLE "{SCHEMA}"."Coded Rows" (code text PRIMARY KEY, v int);
INSERT INTO "{SCHEMA}"."Coded Rows" SELECT 'c' || lpad(i::text, 6, '0') || (CASE WHEN i % 3 = 0 THEN 'Z' ELSE 'a' END),
  i FROM generate_series(1, 8000) i;
CREATE TABLE "{SCHEMA}".unkeyed (v int, w text);
INSERT INTO "{SCHEMA}".unkeyed SELECT i, 'w' || i FROM generate_series(1, 500) i;
CREATE TABLE "{SCHEMA}".still (v int);
INSERT INTO "{SCHEMA}".still SELECT generate_series(1, 100);
CREATE TABLE "{SCHEMA}".stamped (at timestamptz PRIMARY KEY, n numeric);
INSERT INTO "{SCHEMA}".stamped SELECT '2024-01-01'::timestamptz + i * interval '1 second', i / 7.0
  FROM generate_series(1, 6000) i;
"""
# An app's triggers and a materialized view: a file copy's rows are replaced with them held still,
# and its views refreshed afterwards.
APP_SQL = f"""
CREATE TABLE "{SCHEMA}".audit (n bigserial PRIMARY KEY, item bigint, what text);
CREATE FUNCTION "{SCHEMA}".stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.body := NEW.body || ' (stamped)'; RETURN NEW; END $$;
CREATE FUNCTION "{SCHEMA}".audited() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO "{SCHEMA}".audit (item, what) VALUES (coalesce(NEW.id, OLD.id), TG_OP); RETURN NULL; END $$;
CREATE TRIGGER stamp BEFORE INSERT ON "{SCHEMA}".items FOR EACH ROW EXECUTE FUNCTION "{SCHEMA}".stamp();
CREATE TRIGGER audited AFTER INSERT OR UPDATE OR DELETE ON "{SCHEMA}".items
  FOR EACH ROW EXECUTE FUNCTION "{SCHEMA}".audited();
CREATE MATERIALIZED VIEW "{SCHEMA}".item_count AS SELECT count(*) AS n FROM "{SCHEMA}".items;
"""
# A day of an app's changes: new rows, updates of recent ones, a few deletes.
APP_DAY = f"""
INSERT INTO "{SCHEMA}".items SELECT i, 'new ' || i, now() FROM generate_series(30001, 30300) i;
UPDATE "{SCHEMA}".items SET body = 'updated' WHERE id > 29950 AND id <= 30000;
DELETE FROM "{SCHEMA}".items WHERE id IN (7, 12000);
UPDATE "{SCHEMA}".unkeyed SET w = 'changed' WHERE v = 9;
UPDATE "{SCHEMA}"."Coded Rows" SET v = 0 WHERE code = 'c000001a';
"""
CONTENTS_TABLES = ("items", '"Coded Rows"', "unkeyed", "still", "stamped", "audit")


@pytest.fixture
def incremental_source(supabase_cluster: PostgresCluster) -> Iterator[str]:
    supabase_cluster.execute(INCREMENTAL_SQL + APP_SQL, user=APP_OWNER)
    yield SCHEMA
    supabase_cluster.execute(f'DROP SCHEMA "{SCHEMA}" CASCADE', user=APP_OWNER)


def run_backup(target: str, instance: dg.DagsterInstance, mode: str) -> dg.ExecuteInProcessResult:
    return build_definitions().get_job_def(BACKUP_JOB).execute_in_process(
        run_config=backup_run_config(target, mode=mode), instance=instance, raise_on_error=False)


def step_metadata(result: dg.ExecuteInProcessResult, step: str) -> dict[str, object]:
    [output] = [event.step_output_data.metadata for event in result.all_events
                if event.is_successful_output and event.step_key == step]
    return {name: entry.value for name, entry in output.items()}


def run_egress(result: dg.ExecuteInProcessResult) -> int:
    return result.output_for_node(DUMP_STEP).egress_bytes + result.output_for_node(LOAD_STEP).copy_egress_bytes


def table_rows(cluster: PostgresCluster, dbname: str, table: str) -> list[tuple]:
    return cluster.query(f'SELECT r::text FROM "{SCHEMA}".{table} AS r ORDER BY 1', dbname=dbname)


def incremental_after(target: str, instance: dg.DagsterInstance, source: PostgresCluster,
                      changes: str) -> dg.ExecuteInProcessResult:
    """A full copy, then the app's ``changes`` on the source, then a successful incremental run."""
    assert run_backup(target, instance, FULL).success
    source.execute(changes, user=APP_OWNER)
    result = run_backup(target, instance, INCREMENTAL)
    assert result.success, step_errors(result)
    assert step_metadata(result, PLAN_STEP)["mode"] == INCREMENTAL
    return result


def assert_same_contents(supabase: PostgresCluster, vps: PostgresCluster, target: str) -> None:
    for table in CONTENTS_TABLES:
        assert table_rows(vps, target, table) == table_rows(supabase, "postgres", table), table


def test_unchanged_source_costs_a_small_share_of_a_full_copy_and_copies_no_rows(
    backup_env: BackupEnv, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster, incremental_source: str,
) -> None:
    target = "wehub_incr_same"
    full = run_backup(target, instance, FULL)
    assert full.success, step_errors(full)
    manifest = read_manifest(manifest_path(backup_env.backup_dir, target))
    assert manifest is not None and manifest.mode == FULL and manifest.full_at == manifest.verified_at
    assert (manifest_path(backup_env.backup_dir, target).stat().st_mode & 0o777) == 0o600
    # The verification's table and chunk digests, kept for the next run (it then need not read the copy).
    record = chunk_record_path(manifest_path(backup_env.backup_dir, target))
    assert (record.stat().st_mode & 0o777) == 0o600
    recorded = read_chunks(record)
    assert recorded[f"{SCHEMA}.items"].bounds is not None and recorded[f"{SCHEMA}.unkeyed"].bounds is None

    again = run_backup(target, instance, INCREMENTAL)
    assert again.success, step_errors(again)
    plan = step_metadata(again, PLAN_STEP)
    assert plan["mode"] == INCREMENTAL, plan["mode_reason"]
    assert again.dagster_run.tags[MODE_TAG] == INCREMENTAL
    load = step_metadata(again, LOAD_STEP)
    assert load["chunks_copied"] == 0 < load["chunks_compared"]
    # Staging was a file copy of the current copy: nothing was written into it.
    assert step_metadata(again, STAGE_STEP)["made_from"] == "a file copy of the current copy"
    assert load["rows_copied"] == 0 and load["rows_from_current_copy"] == 0
    assert load["tables_unchanged"] >= len(CONTENTS_TABLES)
    dump = step_metadata(again, DUMP_STEP)
    assert dump["chunk_digests"] >= load["chunks_compared"] - 5 and dump["chunk_digest_bytes"] > 0
    # The schema, the digests and the source's own tables: a small share of what the full run cost.
    assert run_egress(again) < run_egress(full) * 0.2
    assert_same_contents(supabase_cluster, vps_cluster, target)
    assert databases_named(vps_cluster, target) == {target, previous_name(target)}
    # The budget expects each mode's run to cost what the last one of that mode did.
    assert estimate_run_egress(instance, BACKUP_JOB, 10**9, INCREMENTAL)[0] == run_egress(again)
    assert estimate_run_egress(instance, BACKUP_JOB, 10**9, FULL)[0] == run_egress(full)
    usage = egress_usage(instance)
    assert usage.by_mode() == (f"1 full ({human_bytes(run_egress(full))}), "
                               f"1 incremental ({human_bytes(run_egress(again))})")
    report = format_egress_report(usage, run_egress(full), run_egress(again))
    assert f"  next incremental run: about {human_bytes(run_egress(again))}" in report
    after = read_manifest(manifest_path(backup_env.backup_dir, target))
    assert after is not None and after.mode == INCREMENTAL and after.full_at == manifest.full_at
    assert after.database_oid != manifest.database_oid  # the new copy is a new database; __previous is the old

    # Without the recorded digests the run reads them from the copy, and is still incremental.
    record.unlink()
    third = run_backup(target, instance, INCREMENTAL)
    assert third.success, step_errors(third)
    assert step_metadata(third, PLAN_STEP)["mode"] == INCREMENTAL
    assert step_metadata(third, LOAD_STEP)["chunks_copied"] == 0 and record.exists()


def test_bounds_are_kept_across_runs_and_a_chunk_crowded_by_new_rows_is_cut_again(
    backup_env: BackupEnv, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster, incremental_source: str,
) -> None:
    """The verification of an incremental run digests staging at the bounds the source was cut at,
    without sampling the tables again; the app's new rows, all beyond the last bound, are cut into
    chunks of their own at keys read by the index, and the next run finds nothing to fetch."""
    target = "wehub_incr_bounds"
    record = chunk_record_path(manifest_path(backup_env.backup_dir, target))

    def recorded_bounds() -> dict[str, ChunkBounds | None]:
        return {name: table.bounds for name, table in read_chunks(record).items()}

    assert run_backup(target, instance, FULL).success
    full = recorded_bounds()
    supabase_cluster.execute(f'INSERT INTO "{SCHEMA}".items SELECT i, repeat(md5(i::text), 3), now() '
                             "FROM generate_series(30001, 36000) i", user=APP_OWNER)
    grown = run_backup(target, instance, INCREMENTAL)
    assert grown.success, step_errors(grown)
    assert step_metadata(grown, STAGE_STEP)["made_from"] == "a file copy of the current copy"
    after_growth = recorded_bounds()
    old, new = full[f"{SCHEMA}.items"], after_growth[f"{SCHEMA}.items"]
    assert old is not None and new is not None and new.bounds[:len(old.bounds)] == old.bounds
    added = [int(key) for key in new.bounds[len(old.bounds):]]
    assert len(added) >= 5 and added == sorted(added) and int(old.bounds[-1]) < added[0] < added[-1] <= 36000
    assert after_growth[f"{SCHEMA}.stamped"] == full[f"{SCHEMA}.stamped"], "an unchanged table keeps its bounds"

    unchanged = run_backup(target, instance, INCREMENTAL)
    assert unchanged.success, step_errors(unchanged)
    assert step_metadata(unchanged, LOAD_STEP)["chunks_copied"] == 0
    assert recorded_bounds() == after_growth
    assert_same_contents(supabase_cluster, vps_cluster, target)


def test_changes_of_every_kind_are_fetched_and_the_rest_comes_from_the_copy(
    backup_env: BackupEnv, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster, incremental_source: str,
) -> None:
    target = "wehub_incr_changes"
    result = incremental_after(target, instance, supabase_cluster, APP_DAY + f"""
        INSERT INTO "{SCHEMA}".items VALUES (0, 'below every bound', now());
        UPDATE "{SCHEMA}"."Coded Rows" SET v = -v WHERE code = 'c004000a';
        INSERT INTO "{SCHEMA}"."Coded Rows" VALUES ('B before lower case', 1), ('zzz', 2);
        UPDATE "{SCHEMA}".stamped SET n = 0 WHERE at = '2024-01-01 00:50:00+00';
        ALTER TABLE "{SCHEMA}".still ADD COLUMN note text DEFAULT 'added';
        CREATE TABLE "{SCHEMA}".fresh (id int PRIMARY KEY);
        INSERT INTO "{SCHEMA}".fresh SELECT generate_series(1, 10);
    """)
    load = step_metadata(result, LOAD_STEP)
    # A new table and a new column: staging is built from the schema up, unchanged rows copied from the copy.
    assert step_metadata(result, STAGE_STEP)["not_a_file_copy_because"] == (
        "the schema changed since the current copy was made")
    # items: the first and last chunks, the deleted row's; Coded: two ends and one middle; stamped: one.
    assert 4 <= load["chunks_copied"] <= 14 < load["chunks_compared"]
    whole = str(load["tables_copied_whole"])
    assert all(name in whole for name in ("unkeyed", "still", "fresh")) and "items" not in whole
    assert load["rows_copied"] < 16_000 and load["rows_from_current_copy"] > 40_000
    assert_same_contents(supabase_cluster, vps_cluster, target)
    assert table_rows(vps_cluster, target, "fresh") == table_rows(supabase_cluster, "postgres", "fresh")
    assert vps_cluster.query(f'SELECT count(*) FROM "{SCHEMA}".still WHERE note = %s', ("added",),
                             dbname=target) == [(100,)]
    # Indexes and constraints came with the schema (post-data), as in a full copy.
    indexes = "SELECT count(*) FROM pg_indexes WHERE schemaname = %s"
    assert vps_cluster.query(indexes, (SCHEMA,), dbname=target) == supabase_cluster.query(indexes, (SCHEMA,))


def test_into_a_file_copy_only_changed_rows_are_written_with_the_app_triggers_held(
    backup_env: BackupEnv, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster, incremental_source: str,
) -> None:
    target = "wehub_incr_in_place"
    result = incremental_after(target, instance, supabase_cluster, APP_DAY)
    assert step_metadata(result, STAGE_STEP)["made_from"] == "a file copy of the current copy"
    load = step_metadata(result, LOAD_STEP)
    assert load["rows_from_current_copy"] == 0 and 0 < load["rows_copied"] < 12_000
    assert 3 <= load["chunks_copied"] < load["chunks_compared"] // 4
    # The changed chunks compared again in parts: each deleted old row costs a part of its chunk (2,550
    # rows were sent when whole chunks were).
    assert load["chunk_parts_copied"] < load["chunk_parts_compared"] and load["rows_copied"] < 1_600
    assert "unkeyed" in str(load["tables_copied_whole"])
    # The rows as the source holds them: its triggers ran there once, and not again in staging.
    assert_same_contents(supabase_cluster, vps_cluster, target)
    assert vps_cluster.query(f'SELECT count(*) FROM "{SCHEMA}".items WHERE body LIKE %s', ("%(stamped) (stamped)",),
                             dbname=target) == [(0,)]
    sequence = f'SELECT last_value FROM "{SCHEMA}".audit_n_seq'
    assert vps_cluster.query(sequence, dbname=target) == supabase_cluster.query(sequence)
    # The materialized view was refreshed over the new rows, as a restore refreshes it.
    assert vps_cluster.query(f'SELECT n FROM "{SCHEMA}".item_count', dbname=target) == vps_cluster.query(
        f'SELECT count(*) FROM "{SCHEMA}".items', dbname=target) == [(30_298,)]
    assert databases_named(vps_cluster, target) == {target, previous_name(target)}


def test_a_session_on_the_current_copy_makes_staging_from_the_schema_up(
    backup_env: BackupEnv, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster, incremental_source: str,
) -> None:
    target = "wehub_incr_busy"
    assert run_backup(target, instance, FULL).success
    supabase_cluster.execute(f'UPDATE "{SCHEMA}".items SET body = \'x\' WHERE id = 3', user=APP_OWNER)
    # As a copy restored shortly before autovacuum came by: its kept chunks are read by key ranges.
    vps_cluster.execute(f"DELETE FROM pg_statistic WHERE starelid = '\"{SCHEMA}\".items'::regclass", dbname=target)
    session = vps_cluster.connect(dbname=target)  # an application's, on the copy until staging is made
    closer = threading.Thread(target=_close_once, args=(session, lambda: _staging_exists(vps_cluster, target)),
                              daemon=True)
    closer.start()
    result = run_backup(target, instance, INCREMENTAL)
    closer.join(60)
    assert session.closed
    assert result.success, step_errors(result)
    assert "the current copy is in use" in str(step_metadata(result, STAGE_STEP)["not_a_file_copy_because"])
    assert step_metadata(result, LOAD_STEP)["rows_from_current_copy"] > 30_000
    assert_same_contents(supabase_cluster, vps_cluster, target)
    assert any("planner statistics gathered on the current copy" in record.message
               for record in instance.all_logs(result.run_id))
    assert vps_cluster.query(f"SELECT count(*) > 0 FROM pg_statistic WHERE starelid = '\"{SCHEMA}\".items'::regclass",
                             dbname=previous_name(target)) == [(True,)]


@pytest.mark.parametrize("staging", ["file copy", "from the schema up"])
def test_a_copy_that_changes_under_the_run_fails_verification_and_the_next_run_is_full(
    staging: str, backup_env: BackupEnv, instance: dg.DagsterInstance, supabase_cluster: PostgresCluster,
    vps_cluster: PostgresCluster, incremental_source: str,
) -> None:
    """The rows an incremental run keeps come from the current copy: a write there after the run
    read its digests must not make a copy that differs from the source pass as verified. Into a
    file copy the write lands before the copy is made (during the dump); into staging built from
    the schema up, before the unchanged rows are copied (once staging exists)."""
    target = "wehub_incr_race"
    assert run_backup(target, instance, FULL).success
    if staging == "from the schema up":
        supabase_cluster.execute(f'ALTER TABLE "{SCHEMA}".still ADD COLUMN note text', user=APP_OWNER)
    before = table_rows(vps_cluster, target, "items")
    # The plan has read the copy's digests once the dump writes its archive (the run's working directory).
    when = (lambda: any(backup_env.backup_dir.glob("run-*/archive"))) if staging == "file copy" \
        else (lambda: _staging_exists(vps_cluster, target))
    tamper = threading.Thread(target=_write_to_the_copy_once, args=(vps_cluster, target, when), daemon=True)
    tamper.start()
    raced = run_backup(target, instance, INCREMENTAL)
    tamper.join(60)
    assert not raced.success
    assert any("verification failed: table Incr Schema." in error for error in step_errors(raced))
    assert read_manifest(manifest_path(backup_env.backup_dir, target)) is None
    assert staging_name(target) not in databases_named(vps_cluster, target)

    vps_cluster.execute(f'UPDATE "{SCHEMA}".items SET body = repeat(md5(id::text), 3) WHERE id = 20000',
                        dbname=target)
    assert table_rows(vps_cluster, target, "items") == before
    next_run = run_backup(target, instance, INCREMENTAL)
    assert next_run.success, step_errors(next_run)
    assert step_metadata(next_run, PLAN_STEP)["mode"] == FULL
    assert "no record of a verified copy" in str(step_metadata(next_run, PLAN_STEP)["mode_reason"])
    assert_same_contents(supabase_cluster, vps_cluster, target)


def _close_once(session: psycopg.Connection, when: Callable[[], bool]) -> None:
    _wait_for(when)
    session.close()


def _write_to_the_copy_once(vps: PostgresCluster, target: str, when: Callable[[], bool]) -> None:
    if _wait_for(when):
        vps.execute(f"UPDATE \"{SCHEMA}\".items SET body = 'written on the copy' WHERE id = 20000", dbname=target)


def _wait_for(condition: Callable[[], bool], timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def _staging_exists(vps: PostgresCluster, target: str) -> bool:
    return bool(vps.query("SELECT 1 FROM pg_database WHERE datname = %s", (staging_name(target),)))


def test_a_copy_without_a_record_of_this_database_gets_a_full_copy(
    backup_env: BackupEnv, instance: dg.DagsterInstance, incremental_source: str,
) -> None:
    target = "wehub_incr_record"
    assert estimate_run_egress(instance, BACKUP_JOB, 10**9, INCREMENTAL) == (10**9 // 20, FIRST_INCREMENTAL_BASIS)
    first = run_backup(target, instance, INCREMENTAL)  # no copy yet
    assert first.success, step_errors(first)
    assert step_metadata(first, PLAN_STEP)["mode"] == FULL
    path = manifest_path(backup_env.backup_dir, target)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "database_oid": record["database_oid"] + 1}))
    second = run_backup(target, instance, INCREMENTAL)
    assert second.success, step_errors(second)
    assert "not the database the record was written for" in str(step_metadata(second, PLAN_STEP)["mode_reason"])


def test_mode_decision() -> None:
    now = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    week = timedelta(days=7)
    fresh = CopyManifest("u@h/db", 42, (now - timedelta(days=1)).isoformat(), (now - timedelta(days=3)).isoformat(),
                         INCREMENTAL, "digest")
    assert decide_mode(INCREMENTAL, fresh, 42, "u@h/db", False, week, now).mode == INCREMENTAL
    assert decide_mode(FULL, fresh, 42, "u@h/db", False, week, now).mode == FULL
    for manifest, oid, source, adopted, why in (
        (None, 42, "u@h/db", False, "no record"),
        (fresh, None, "u@h/db", False, "no copy yet"),
        (fresh, 43, "u@h/db", False, "not the database"),
        (fresh, 42, "other@h/db", False, "not of other@h/db"),
        (fresh, 42, "u@h/db", True, "adopted"),
        (CopyManifest("u@h/db", 42, now.isoformat(), (now - week).isoformat(), INCREMENTAL, "digest"), 42, "u@h/db", False,
         "7 days old"),
    ):
        decision = decide_mode(INCREMENTAL, manifest, oid, source, adopted, week, now)
        assert decision.mode == FULL and why in decision.reason, decision


def test_chunk_digests_are_kept_packed_and_exactly() -> None:
    """A table's chunks as the verification holds them: the same counts and digests a dict of
    fingerprints would hold (digests beyond 64 bits, either sign), and an empty chunk is no key."""
    digests = {0: (3, -(2**70) - 5), 2: (1, 2**64 + 1), 32767: (7, -1)}
    packed = ChunkDigests(32768)
    for number, (rows, digest) in digests.items():
        packed.add(number, rows, digest)
    as_dict = {number: TableFingerprint(rows, str(digest)) for number, (rows, digest) in digests.items()}
    assert packed == as_dict and list(packed) == [0, 2, 32767] and len(packed) == 3
    assert (1 in packed, packed.get(1), packed.get(32768), packed.get(None)) == (False, None, None, None)
    assert summed(packed.values()) == summed(as_dict.values())
    with pytest.raises(ValueError):
        packed.add(5, 0, 0)


def test_the_chunk_record_reads_back_as_written_and_a_record_that_does_not_fit_its_bounds_is_none(
    tmp_path: Path,
) -> None:
    """What the next incremental run trusts instead of reading the copy: read back exactly, or not
    at all (then the run reads the copy's digests on the VPS) when it was cut short, lists another
    number of chunks than its bounds cut, or is of another layout."""
    bounds = ChunkBounds(ChunkKey("id", "bigint", False), ("10", "20", "30"))
    chunks = ChunkDigests(bounds.chunks)
    chunks.add(0, 2, -(2**66))
    chunks.add(3, 5, 12345)
    fingerprint = DatabaseFingerprint(tables={"s.keyed": summed(chunks.values()), "s.whole": TableFingerprint(4, "99")},
                                      chunks={"s.keyed": chunks})
    record = tmp_path / "copies" / "wehub.chunks.json"
    record_chunks(record, {"s.keyed": bounds}, fingerprint)
    assert (record.stat().st_mode & 0o777) == 0o600
    assert read_chunks(record) == {"s.keyed": RecordedTable(fingerprint.tables["s.keyed"], bounds, chunks),
                                   "s.whole": RecordedTable(TableFingerprint(4, "99"), None, {})}

    written = json.loads(record.read_text())
    assert written["s.keyed"]["chunks"] == {"rows": [2, 0, 0, 5], "digests": [-(2**66), 0, 0, 12345]}
    for damaged in ({"rows": [2, 0, 5], "digests": [-(2**66), 0, 12345]},  # one chunk short of its bounds
                    {"0": [2, str(-(2**66))], "3": [5, "12345"]},  # chunk by chunk, as an earlier record
                    {"rows": [2, 0, 0, -5], "digests": [-(2**66), 0, 0, 12345]}):
        record.write_text(json.dumps({**written, "s.keyed": {**written["s.keyed"], "chunks": damaged}}))
        assert read_chunks(record) == {}, damaged
    record.write_text(json.dumps(written)[:-40])
    assert read_chunks(record) == {}


def test_chunks_are_selected_by_runs_of_key_ranges_in_statements_of_bounded_size() -> None:
    assert chunk_runs([1, 2, 3, 7, 9, 10]) == [(1, 3), (7, 7), (9, 10)]
    assert chunk_runs([]) == []
    bounds = ChunkBounds(ChunkKey("id", "bigint", False), tuple(str(1000 * i) for i in range(1, 2000)))
    every_other = range(0, 2000, 2)
    selections = bounds.selections(every_other)
    assert [count for _, count in selections] == [MAX_RANGES] * 3 + [1000 - 3 * MAX_RANGES]
    first = selections[0][0].as_string()
    assert first.startswith("((\"id\" < '1000'::bigint) OR (\"id\" >= '2000'::bigint AND \"id\" < '3000'::bigint) OR")
    assert len(first) < 64 * 1024  # psql's argument stays far below the kernel's 128 KiB
    [(last, count)] = bounds.selections([1999])
    assert (last.as_string(), count) == ("((\"id\" >= '1999000'::bigint))", 1)


def test_chosen_chunks_are_read_and_replaced_by_the_key_index_even_without_planner_statistics(
        vps_cluster: PostgresCluster) -> None:
    """A copy restored minutes before has no statistics yet: the planner would scan the whole table
    and test each row against every key range (seconds per statement at a million rows); past a few
    hundred ranges it reads the whole index instead, until the table is analyzed."""
    database = "wehub_chunk_plans"
    vps_cluster.fresh_database(database)
    vps_cluster.execute("CREATE TABLE public.accounts (id int PRIMARY KEY, filler text) WITH (autovacuum_enabled = off);"
                        "INSERT INTO public.accounts SELECT i, repeat('x', 80) FROM generate_series(1, 200000) i",
                        dbname=database)
    bounds = ChunkBounds(ChunkKey("id", "integer", False), tuple(str(key) for key in range(100, 200_000, 100)))
    [(selection, _)] = bounds.selections(range(1, 2000, 8))  # 250 scattered chunks, as scattered deletes make them
    task = CopyRange(StreamedTable(0, "public", "accounts", 0, 8192, ("id", "filler"), False), whole=False,
                     selection=selection, replaces=True)
    statements = [sql.SQL("EXPLAIN {} FROM ONLY public.accounts{}").format(sql.SQL(verb), task.where())
                  for verb in ("SELECT id, filler", "DELETE")]
    with vps_cluster.connect(database) as conn:
        unset = ["\n".join(row for (row,) in conn.execute(statement)) for statement in statements]
        for setting in task.planner_settings():
            conn.execute(setting)
        planned = ["\n".join(row for (row,) in conn.execute(statement)) for statement in statements]
        # Hundreds of ranges more and the index is read whole, the ranges a filter: until the table is analyzed.
        many = sql.SQL("EXPLAIN SELECT id FROM ONLY public.accounts WHERE {}").format(
            sql.SQL(" OR ").join(condition for condition, _ in bounds.selections(range(1, 2000, 4))))
        unanalyzed = "\n".join(row for (row,) in conn.execute(many))
        assert analyze_unanalyzed(conn, ["public.accounts", "public.missing"]) == ["public.accounts"]
        assert analyze_unanalyzed(conn, ["public.accounts"]) == []  # analyzed once
        analyzed = "\n".join(row for (row,) in conn.execute(many))
    vps_cluster.drop_database(database)
    assert all("Seq Scan" in plan for plan in unset), unset  # what the settings are for
    for plan in planned:
        assert "Bitmap Index Scan on accounts_pkey" in plan and "Seq Scan" not in plan and "JIT" not in plan, plan
    assert "Index Cond" not in unanalyzed and "Filter" in unanalyzed, unanalyzed
    assert "BitmapOr" in analyzed and "Index Cond" in analyzed and "Filter" not in analyzed, analyzed


def test_changed_chunks_of_a_file_copy_are_compared_again_in_parts_unless_most_of_the_table_changed() -> None:
    table = StreamedTable(1, "s", "t", 10 * CHUNK_BYTES, 8192, ("id",), False, ("id bigint",))
    bounds = ChunkBounds(ChunkKey("id", "bigint", False), tuple(str(100 * i) for i in range(1, 10)))
    copy_chunks = {n: TableFingerprint(100, str(n)) for n in range(10)}
    base = IncrementBase(None, {"s.t": CopiedTable(table.definition, summed(copy_chunks.values()), bounds, copy_chunks)},
                         0.0)

    def plan_for(changed: set[int], in_place: bool = True) -> IncrementalCopy:
        chunks = {n: TableFingerprint(100, str(n) + ("x" if n in changed else "")) for n in range(10)}
        return incremental_tasks([table], base, DatabaseFingerprint(chunks={"s.t": chunks}), CHUNK_BYTES, 15,
                                 in_place=in_place)

    scattered = plan_for({2, 7})
    [changed] = scattered.changed
    assert changed.numbers == {2, 7} and changed.rows == 200
    assert [task.label for task in scattered.tasks] == ["2 changed chunks"]  # whole, until the parts are compared
    assert not plan_for(set(range(6))).changed  # a mass update: its parts would differ too
    assert not plan_for({2, 7}, in_place=False).changed  # staging from the schema up: nothing to compare in parts
