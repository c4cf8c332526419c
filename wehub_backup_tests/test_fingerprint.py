"""The content digest: equal for equal content, different for any changed value."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import pq

from wehub_backup.pg.chunks import ChunkBounds, ChunkKey, chunk_keys
from wehub_backup.pg.digests import DigestedTable, TableFingerprint, summed, table_digest, table_digests
from wehub_backup.pg.fingerprint import (
    DatabaseFingerprint,
    compare_fingerprints,
    fingerprint_database,
    sequence_positions,
)
from wehub_backup_tests.harness.cluster import PostgresCluster

ROWS = """INSERT INTO {t} (id, mood, payload, amount, ratio, tags, note, seen_at, raw, addr)
SELECT i, (ARRAY['ok', 'über'])[1 + i % 2]::{s}.mood, jsonb_build_object('i', i, 'nested', jsonb_build_array(i, 'x')),
       i * 1.25, CASE WHEN i = 3 THEN 'NaN'::float8 ELSE i / 7.0 END, ARRAY['a' || i, NULL],
       E'line\\ttab\\\\ ' || i, timestamptz '2024-01-01 00:00+00' + i * interval '1 hour',
       decode(lpad(to_hex(i), 2, '0') || '00ff', 'hex'), inet '10.0.0.0' + i
FROM generate_series(1, 50) AS i"""


@pytest.fixture
def digest_db(vps_cluster: PostgresCluster) -> str:
    name = "digest_checks"
    vps_cluster.fresh_database(name)
    columns = ("id int, mood s.mood, payload jsonb, amount numeric(12,2), ratio float8, tags text[], note text, "
               "seen_at timestamptz, raw bytea, addr inet")
    vps_cluster.execute(
        "CREATE SCHEMA s; CREATE TYPE s.mood AS ENUM ('ok', 'über');"
        f"CREATE TABLE s.a ({columns}); CREATE TABLE s.b ({columns});"
        + ROWS.format(t="s.a", s="s") + ";" + ROWS.format(t="s.b", s="s").replace("generate_series(1, 50)", "generate_series(50, 1, -1)"),
        dbname=name)
    return name


def digests(vps_cluster: PostgresCluster, dbname: str) -> tuple[tuple[int, str], tuple[int, str]]:
    with vps_cluster.connect(dbname) as conn:
        return table_digest(conn, "s", "a"), table_digest(conn, "s", "b")


def test_equal_content_in_another_order_gives_the_same_digest(vps_cluster: PostgresCluster, digest_db: str) -> None:
    a, b = digests(vps_cluster, digest_db)
    assert a == b and a[0] == 50


@pytest.mark.parametrize("change", [
    "UPDATE s.b SET payload = payload || '{\"i\": 0}' WHERE id = 7",
    "UPDATE s.b SET note = note || ' ' WHERE id = 8",
    "UPDATE s.b SET ratio = ratio + 1e-12 WHERE id = 9",
    "UPDATE s.b SET mood = 'ok' WHERE id = 1",
    "UPDATE s.b SET tags[2] = '' WHERE id = 2",
    "UPDATE s.b SET raw = raw || '\\x00'::bytea WHERE id = 4",
    "UPDATE s.b SET id = 51 WHERE id = 50",
    "UPDATE s.b SET seen_at = seen_at + interval '1 microsecond' WHERE id = 5",
    "DELETE FROM s.b WHERE id = 6",
])
def test_any_changed_value_changes_the_digest(vps_cluster: PostgresCluster, digest_db: str, change: str) -> None:
    vps_cluster.execute(change, dbname=digest_db)
    a, b = digests(vps_cluster, digest_db)
    assert a != b


def test_compare_names_the_table(vps_cluster: PostgresCluster, digest_db: str) -> None:
    with vps_cluster.connect(digest_db) as conn:
        before = fingerprint_database(conn, ["s"], [])
    vps_cluster.execute("UPDATE s.a SET note = 'changed' WHERE id = 3", dbname=digest_db)
    with vps_cluster.connect(digest_db) as conn:
        after = fingerprint_database(conn, ["s"], [])
    assert compare_fingerprints(before, after) == ["table s.a: content differs (50 rows each)"]


def test_large_objects_are_counted_and_digested_when_asked(vps_cluster: PostgresCluster, digest_db: str) -> None:
    vps_cluster.execute("SELECT lo_from_bytea(424242, 'first body'), lo_from_bytea(0, '')", dbname=digest_db)

    def fingerprint(large_objects: bool = True):  # noqa: ANN202 - DatabaseFingerprint
        with vps_cluster.connect(digest_db) as conn:
            return fingerprint_database(conn, ["s"], [], large_objects=large_objects)

    before = fingerprint()
    assert before.large_objects is not None and before.large_objects.rows == 2
    assert fingerprint(large_objects=False).large_objects is None
    vps_cluster.execute("SELECT lo_put(424242, 0, 'F')", dbname=digest_db)
    assert compare_fingerprints(before, fingerprint()) == ["large objects: content differs (2 each)"]
    vps_cluster.execute("SELECT lo_unlink(424242)", dbname=digest_db)
    assert compare_fingerprints(before, fingerprint()) == ["large objects: 1 in the copy, 2 in the source"]


# The fingerprint's statements do not grow with the tables: at most one digest statement per
# DIGEST_BATCH_TABLES tables (or per DIGEST_BATCH_BYTES of them) and one sequence statement per
# SEQUENCE_BATCH sequences; 10 and 200 small tables, each with a sequence, take the same number.
MORE_ROUND_TRIPS_FOR_200_TABLES = 1


@contextmanager
def round_trips(conn: psycopg.Connection) -> Iterator[list[int]]:
    """The round trips ``conn`` makes inside the block, counted on the wire by libpq's trace: each
    simple-protocol Query and each extended-protocol Sync the client sends waits for the server."""
    with tempfile.TemporaryFile("w+") as trace:
        counted: list[int] = []
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield counted
        finally:
            conn.pgconn.untrace()
            trace.seek(0)
            counted.append(sum(1 for line in trace if re.match(r"F\t\d+\t(Query|Sync)\b", line)))


@pytest.fixture
def many_tables_db(vps_cluster: PostgresCluster) -> str:
    name = "digest_many_tables"
    vps_cluster.fresh_database(name)
    statements = []
    for schema, tables in (("few", 10), ("many", 200)):
        statements.append(f"CREATE SCHEMA {schema}")
        statements += [f"CREATE TABLE {schema}.t{i} (id serial PRIMARY KEY, note text, at date DEFAULT '2024-01-01');"
                       f"INSERT INTO {schema}.t{i} (note) SELECT 'row ' || j FROM generate_series(1, {i % 7}) j"
                       for i in range(tables)]
    vps_cluster.execute(";".join(statements), dbname=name)
    return name


def fingerprint_in_snapshot(conn: psycopg.Connection, schema: str) -> tuple[DatabaseFingerprint, int]:
    """A backup's source-side reads of ``schema``: sequences before, fingerprint (every other table
    cut in chunks), sequences after; and the round trips they took."""
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    keys = chunk_keys(conn, [schema])
    chunked = {name: ChunkBounds(key, ("2", "4")) for name, key in keys.items() if int(name.rsplit("t", 1)[1]) % 2}
    with round_trips(conn) as counted:
        before = sequence_positions(conn, [schema], [])
        fingerprint = fingerprint_database(conn, [schema], [], before, large_objects=True, chunked=chunked)
        assert sequence_positions(conn, [schema], []) == before
    conn.rollback()
    return fingerprint, counted[0]


def test_round_trips_do_not_grow_with_the_tables(vps_cluster: PostgresCluster, many_tables_db: str) -> None:
    with vps_cluster.connect(many_tables_db) as conn:
        few, few_trips = fingerprint_in_snapshot(conn, "few")
        many, many_trips = fingerprint_in_snapshot(conn, "many")
        singly = {f"many.t{i}": table_digest(conn, "many", f"t{i}") for i in range(200)}
    assert (len(few.tables), len(many.tables), len(many.sequences), len(many.chunks)) == (10, 200, 200, 100)
    assert many_trips - few_trips <= MORE_ROUND_TRIPS_FOR_200_TABLES, (few_trips, many_trips)
    assert {name: (table.rows, table.digest) for name, table in many.tables.items()} == singly
    assert many.chunks["many.t5"] == {0: TableFingerprint(1, many.chunks["many.t5"][0].digest),
                                      1: TableFingerprint(2, many.chunks["many.t5"][1].digest),
                                      2: TableFingerprint(2, many.chunks["many.t5"][2].digest)}
    assert many.sequences["many.t5_id_seq"] == 6 and many.sequences["many.t0_id_seq"] == 1


def test_chunked_digests_hash_their_groups_instead_of_sorting_every_row(vps_cluster: PostgresCluster) -> None:
    """The planner expects a group for each value of a unique key: left to itself, it sorts every row
    of a chunked digest, spilling to disk. The digest's plan, as the server ran it (auto_explain),
    hashes the chunks instead; the session's settings are as they were after."""
    database = "digest_chunk_plans"
    vps_cluster.fresh_database(database)
    vps_cluster.execute("CREATE TABLE public.accounts (id int PRIMARY KEY, filler text);"
                        "INSERT INTO public.accounts SELECT i, repeat('x', 80) FROM generate_series(1, 400000) i;"
                        "ANALYZE public.accounts", dbname=database)
    bounds = ChunkBounds(ChunkKey("id", "integer", False), tuple(str(key) for key in range(400, 400_000, 400)))
    table = DigestedTable("public", "accounts", 40 << 20, bounds)
    plans: list[str] = []
    with vps_cluster.connect(database) as conn:
        conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
        conn.execute("LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_level = notice;"
                     "SET client_min_messages = notice; SET max_parallel_workers_per_gather = 2")
        before = conn.execute("SHOW enable_sort").fetchone()[0], conn.execute("SHOW parallel_tuple_cost").fetchone()[0]
        [chunks] = table_digests(conn, [table])
        digest_plans = [plan for plan in plans if "accounts" in plan]
        after = conn.execute("SHOW enable_sort").fetchone()[0], conn.execute("SHOW parallel_tuple_cost").fetchone()[0]
        [statement] = [plan.split("Query Text: ", 1)[1].split("\n", 1)[0] for plan in digest_plans]
        default = conn.execute(f"EXPLAIN {statement}").fetchall()  # the same statement, planned without the settings
        rows, digest = table_digest(conn, "public", "accounts")
    vps_cluster.drop_database(database)
    default_plan = "\n".join(row for (row,) in default)
    assert "Sort" in default_plan, default_plan  # what the settings are for
    assert "HashAggregate" in digest_plans[0] and "Sort" not in digest_plans[0], digest_plans
    assert after == before == ("on", "0.1")
    assert len(chunks) == len(bounds.bounds) + 1 and summed(chunks.values()) == TableFingerprint(rows, digest)
