"""The content digest: equal for equal content, different for any changed value."""

from __future__ import annotations

import pytest

from wehub_backup.pg.fingerprint import compare_fingerprints, fingerprint_database, table_digest
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
    vps_cluster.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    vps_cluster.execute(f"CREATE DATABASE {name}")
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
