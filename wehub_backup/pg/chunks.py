"""Chunks of a table: key ranges both servers cut the same way, for an incremental copy.

A chunk is the rows between two values of the table's primary key. The boundaries come from
the current copy on the VPS (read there, at no egress) and go to the source as a parameter, so
``width_bucket`` puts each row in the same chunk on both sides; the count and digest sum of
each chunk then say, for a few bytes, which chunks changed. Rows whose keys lie beyond the
last boundary (an app's new rows) fall in the last chunk, and those below the first in chunk 0:
every row is in exactly one chunk, on either side.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

# Key types whose order is the same on every server: numbers, dates and times, uuids, and
# strings compared by their bytes (collation "C", never the server's locale).
_ORDERED_KEY_TYPES = ("int2", "int4", "int8", "numeric", "date", "timestamp", "timestamptz", "uuid")
_STRING_KEY_TYPES = ("text", "varchar", "bpchar")
# What a chunk should hold: small enough that a changed row costs little egress again, large
# enough that the chunks' digests (about 45 bytes each) cost next to nothing. A run's egress is
# about size * 45 / CHUNK_BYTES for digests plus scattered changes * CHUNK_BYTES for rows, least
# at sqrt(45 * size / changes): for 500 MB and a hundred to a few hundred scattered changes a day
# (an app's deletes and updates of old rows), 10 to 30 KiB. Measured at 478 MiB, 128 KiB chunks
# sent 4.4% of a full copy for 1% of rows changed, three quarters of it for 83 scattered deletes.
CHUNK_BYTES = 32 * 1024
MIN_CHUNK_ROWS = 64
# Sampled keys per chunk bound: the bounds fall every that many keys of the sorted sample.
SAMPLE_PER_BOUND = 16
# A copy selects its chunks by key ranges written into its statement (an argument of psql, of at
# most 128 KiB): more runs of chunks than this go in several copies, each its own transaction.
MAX_RANGES = 256
# A kept bound's chunk with more rows than this many chunks' worth is cut again.
CROWDED = 4

# How the rows of chosen chunks are read, deleted and digested: by the key's index. A table without
# planner statistics (a copy restored minutes before, not yet analyzed by autovacuum) is estimated to
# match most of its rows, and the planner then scans it whole, testing every row against every key
# range and compiling that condition by JIT first: measured on 1.3 million rows, 256 ranges took
# 6.7 s to delete that way and 0.09 s by the index.
KEY_RANGE_SETTINGS = {"enable_seqscan": "off", "jit": "off"}
# Tables of ``tables`` (qualified names) without planner statistics. Even with the index forced,
# the planner of such a table takes hundreds of key ranges to match most rows and reads the whole
# index with the ranges as a filter (measured: 3.6 s for 463 ranges of 1.3 million rows, against
# 0.03 s once analyzed).
_UNANALYZED = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (n.nspname || '.' || c.relname) = ANY(%s)
  AND NOT EXISTS (SELECT 1 FROM pg_statistic s WHERE s.starelid = c.oid)"""

# Tables with a one-column primary key of an ordered type, read in the session's snapshot.
_CHUNK_KEYS = """
SELECT n.nspname || '.' || c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       base.typname = ANY(%(strings)s)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type base ON base.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE i.indisprimary AND i.indnatts = 1 AND c.relkind = 'r' AND n.nspname = ANY(%(schemas)s)
  AND base.typname = ANY(%(types)s)"""


@dataclass(frozen=True)
class ChunkKey:
    """The column a table is cut by, its type as both servers spell it, and whether it is a string."""

    column: str
    type: str
    string: bool

    def expression(self) -> sql.Composable:
        column = sql.Identifier(self.column)
        return sql.SQL('{} COLLATE "C"').format(column) if self.string else column

    def value(self, text: str) -> sql.Composable:
        return sql.SQL("{}::{}").format(sql.Literal(text), sql.SQL(self.type))


def chunk_keys(conn: psycopg.Connection, schemas: list[str]) -> dict[str, ChunkKey]:
    """The chunk key of every table of ``schemas`` that has one, by qualified name (one round trip)."""
    rows = conn.execute(_CHUNK_KEYS, {"schemas": schemas, "strings": list(_STRING_KEY_TYPES),
                                      "types": list(_ORDERED_KEY_TYPES + _STRING_KEY_TYPES)}).fetchall()
    return {name: ChunkKey(column, type_name, string) for name, column, type_name, string in rows}


@dataclass(frozen=True)
class ChunkBounds:
    """Where a table's chunks start: chunk ``i`` (1 <= i < n) holds keys in [bounds[i-1], bounds[i]),
    chunk 0 the keys below the first bound, chunk n those from the last on."""

    key: ChunkKey
    bounds: tuple[str, ...]  # the keys' text, in the key's order

    @property
    def chunks(self) -> int:
        return len(self.bounds) + 1

    def with_keys_inside(self, added: Mapping[int, Sequence[str]]) -> ChunkBounds:
        """These bounds and, as further bounds, the increasing keys ``added`` holds for a chunk,
        each above that chunk's first key (so no bound repeats)."""
        if not any(added.values()):
            return self
        merged: list[str] = []
        for number in range(self.chunks):
            merged += added.get(number, ())  # keys inside chunk ``number`` lie below its upper bound
            merged += self.bounds[number:number + 1]
        return ChunkBounds(self.key, tuple(merged))

    def bucket(self) -> sql.Composable:
        """The chunk of the row at hand, the same number on both servers."""
        if not self.bounds:
            return sql.SQL("0")
        return sql.SQL("width_bucket({}, {}::text[]::{}[])").format(
            self.key.expression(), sql.Literal(list(self.bounds)), sql.SQL(self.key.type))

    def any_of(self, chunks: Iterable[int]) -> sql.Composable:
        """One condition selecting the rows of ``chunks``, for a statement of any length (not a psql argument)."""
        return sql.SQL(" OR ").join(condition for condition, _ in self.selections(chunks))

    def selections(self, chunks: Iterable[int]) -> list[tuple[sql.Composable, int]]:
        """Conditions that together select exactly the rows of ``chunks``, each of at most
        ``MAX_RANGES`` key ranges, with the number of chunks each covers."""
        runs = chunk_runs(sorted(set(chunks)))
        groups = [runs[start:start + MAX_RANGES] for start in range(0, len(runs), MAX_RANGES)]
        return [(sql.SQL("({})").format(sql.SQL(" OR ").join(self._key_range(*run) for run in group)),
                 sum(last - first + 1 for first, last in group)) for group in groups]

    def _key_range(self, first: int, last: int) -> sql.Composable:
        conditions = []
        if first > 0:
            conditions.append(sql.SQL("{} >= {}").format(self.key.expression(), self.key.value(self.bounds[first - 1])))
        if last < len(self.bounds):
            conditions.append(sql.SQL("{} < {}").format(self.key.expression(), self.key.value(self.bounds[last])))
        return sql.SQL("({})").format(sql.SQL(" AND ").join(conditions)) if conditions else sql.SQL("true")


def chunk_runs(chunks: list[int]) -> list[tuple[int, int]]:
    """Sorted ``chunks`` as runs (first, last) of consecutive numbers."""
    runs: list[list[int]] = []
    for chunk in chunks:
        if runs and runs[-1][1] == chunk - 1:
            runs[-1][1] = chunk
        else:
            runs.append([chunk, chunk])
    return [(first, last) for first, last in runs]


def chunk_bounds(conn: psycopg.Connection, schema: str, table: str, key: ChunkKey, table_bytes: int) -> ChunkBounds:
    """Bounds cutting the table, as ``conn`` sees it, into chunks of about ``CHUNK_BYTES``.

    Any increasing keys are correct bounds (both sides cut at the same ones), so they come from a
    row sample (``SAMPLE_PER_BOUND`` sampled keys per bound, sorted): a scan of the table, not a
    sort of all its keys, which took most of an incremental run's time. The server picks the
    bounds out of the sample: only they are sent, so what the run holds (and a source sends)
    grows with the chunks, not with the sample, sixteen times their number.
    """
    name = sql.Identifier(schema, table)
    rows = _row_estimate(conn, name)
    per_chunk = _rows_per_chunk(rows, table_bytes)
    if rows <= per_chunk:
        return ChunkBounds(key, ())
    percent = 100.0 * SAMPLE_PER_BOUND / per_chunk  # at most 25: a chunk holds MIN_CHUNK_ROWS at least
    keys = conn.execute(sql.SQL(
        "SELECT k::text FROM (SELECT k, row_number() OVER (ORDER BY k) AS n "
        "FROM (SELECT {key} AS k FROM {t} TABLESAMPLE BERNOULLI ({percent})) sampled) numbered "
        "WHERE n % {every} = 1 AND n > 1 ORDER BY n").format(  # the sample's 17th, 33rd, ... key
        key=key.expression(), t=name, percent=sql.Literal(percent), every=sql.Literal(SAMPLE_PER_BOUND)))
    return ChunkBounds(key, tuple(bound for (bound,) in keys))  # row by row: no list of them all first


def split_crowded_chunks(conn: psycopg.Connection, schema: str, table: str, bounds: ChunkBounds,
                         rows_by_chunk: Mapping[int, int], table_bytes: int) -> ChunkBounds:
    """``bounds`` kept, with each chunk holding more than ``CROWDED`` times its share of rows (by
    ``rows_by_chunk``, the counts the run has already) cut at keys read in its range.

    Kept bounds spare the verification a sampling scan of the whole table; an app's new rows pile
    up beyond the last bound (or in the range of keys it hands out), and only those chunks are
    read again, by the key's index. Chunks emptied by deletes only get smaller.
    """
    per_chunk = _rows_per_chunk(_row_estimate(conn, sql.Identifier(schema, table)), table_bytes)
    crowded = [number for number, rows in rows_by_chunk.items() if rows > CROWDED * per_chunk]
    if not crowded:
        return bounds
    with by_key_ranges(conn):
        added = keys_inside_chunks(conn, schema, table, bounds, bounds.any_of(crowded), per_chunk)
    return bounds.with_keys_inside(added)


def keys_inside_chunks(conn: psycopg.Connection, schema: str, table: str, bounds: ChunkBounds,
                       selection: sql.Composable, every: int) -> dict[int, list[str]]:
    """Every ``every``-th key (``every`` >= 2) of each chunk that holds rows ``selection`` picks, by chunk,
    in order: all above their chunk's first key, so ``bounds.with_keys_inside`` cuts those chunks finer."""
    keys: dict[int, list[str]] = {}
    for chunk, key in conn.execute(sql.SQL(
            "SELECT b, k::text FROM (SELECT b, k, row_number() OVER (PARTITION BY b ORDER BY k) AS n "
            "FROM (SELECT {bucket} AS b, {key} AS k FROM {t} WHERE {selection}) keys) numbered "
            "WHERE n % {every} = 0 ORDER BY b, n").format(
            bucket=bounds.bucket(), key=bounds.key.expression(), t=sql.Identifier(schema, table),
            selection=selection, every=sql.Literal(max(2, every)))).fetchall():
        keys.setdefault(chunk, []).append(key)
    return keys


def key_range_statements() -> tuple[str, ...]:
    """``KEY_RANGE_SETTINGS`` as SET statements, for a session that reads or deletes chosen chunks."""
    return tuple(f"SET {name} = {value}" for name, value in KEY_RANGE_SETTINGS.items())


def by_key_ranges(conn: psycopg.Connection) -> AbstractContextManager[psycopg.Connection]:
    """``conn`` with ``KEY_RANGE_SETTINGS`` for the queries inside."""
    return planned_with(conn, KEY_RANGE_SETTINGS)


@contextmanager
def planned_with(conn: psycopg.Connection, settings: Mapping[str, str]) -> Iterator[psycopg.Connection]:
    """``conn`` with the planner ``settings`` for the queries inside, reset after them, in one round
    trip each way (a failed query fails the run: its session's settings no longer matter)."""
    if settings:
        conn.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
            sql.SQL("set_config({}, {}, false)").format(sql.Literal(name), sql.Literal(value))
            for name, value in settings.items())))
    yield conn
    if settings:  # no parameters: several statements go in one
        conn.execute(sql.SQL("; ").join(sql.SQL("RESET {}").format(sql.Identifier(name)) for name in settings))


def analyze_unanalyzed(conn: psycopg.Connection, tables: list[str]) -> list[str]:
    """ANALYZE those of ``tables`` that have no planner statistics (a sample, not a read of the
    table), so their chosen key ranges are found by the index; the tables analyzed."""
    analyzed = []
    for schema, name in conn.execute(_UNANALYZED, (tables,)).fetchall():
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))
        analyzed.append(f"{schema}.{name}")
    return analyzed


def _rows_per_chunk(rows: int, table_bytes: int) -> int:
    return max(MIN_CHUNK_ROWS, rows * CHUNK_BYTES // table_bytes if table_bytes else rows)


def _row_estimate(conn: psycopg.Connection, table: sql.Composable) -> int:
    """The planner's row count (set by ANALYZE, which autovacuum runs on a restored copy), else a count."""
    [estimate] = conn.execute(sql.SQL("SELECT reltuples::bigint FROM pg_class WHERE oid = {}::regclass").format(
        sql.Literal(table.as_string(conn)))).fetchone()
    if estimate > 0:
        return estimate
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]
