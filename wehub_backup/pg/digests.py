"""Row digests computed by the server: a table's (or each of its chunks') row count and an
order-independent exact sum of a 64-bit hash of each row.

Both sides of a copy compute them, so the copy is checked without its rows crossing the network
again (a few bytes of egress per table). What a value hashes to must not depend on the server:
strings by their bytes, types hashed by OID through their text, output settings fixed
(``set_stable_output``).
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from wehub_backup.pg.chunks import ChunkBounds, planned_with

# Text output of values must not depend on session settings that may differ between servers
# (a role's search_path, say: reg* values print schema-qualified only outside it).
_STABLE_OUTPUT = (
    "SET search_path = pg_catalog", "SET lc_monetary = 'C'", "SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'", "SET extra_float_digits = 1", "SET bytea_output = 'hex'", "SET row_security = off",
)


@dataclass(frozen=True)
class TableFingerprint:
    rows: int
    digest: str
    size_bytes: int = 0

    def same_rows(self, other: TableFingerprint | None) -> bool:
        """Whether ``other`` counts and digests the same rows (their size on disk aside)."""
        return other is not None and (self.rows, self.digest) == (other.rows, other.digest)


class ChunkDigests(Mapping[int, TableFingerprint]):
    """The count and digest of each chunk of a table that holds rows, by chunk number, packed.

    A keyed table of a GiB has some 32,768 chunks: held as a dict of fingerprints they took 6.5 MiB
    on each side a run digests, and the run's memory grew with the database. Chunk numbers run from
    0 to the number of bounds, so each chunk has its place in two flat arrays: 24 bytes a chunk.
    """

    # A chunk's digest is a sum of signed 64-bit hashes, one a row: 128 bits hold 2^64 rows' worth.
    DIGEST_BYTES = 16

    def __init__(self, chunks: int) -> None:
        self._rows = array("q", bytes(8 * chunks))  # 0: the chunk holds no rows
        self._digests = bytearray(self.DIGEST_BYTES * chunks)
        self._held = 0

    def add(self, number: int, rows: int, digest: int) -> None:
        """Chunk ``number``'s count (> 0) and digest."""
        if rows <= 0:
            raise ValueError(f"chunk {number}: {rows} rows")
        self._held += not self._rows[number]
        self._rows[number] = rows
        self._digests[self._place(number)] = digest.to_bytes(self.DIGEST_BYTES, "little", signed=True)

    def _place(self, number: int) -> slice:
        return slice(self.DIGEST_BYTES * number, self.DIGEST_BYTES * (number + 1))

    def _digest(self, number: int) -> int:
        return int.from_bytes(self._digests[self._place(number)], "little", signed=True)

    def __getitem__(self, number: int) -> TableFingerprint:
        if not isinstance(number, int) or not 0 <= number < len(self._rows) or not self._rows[number]:
            raise KeyError(number)
        return TableFingerprint(self._rows[number], str(self._digest(number)))

    def __iter__(self) -> Iterator[int]:
        return (number for number, rows in enumerate(self._rows) if rows)

    def __len__(self) -> int:
        return self._held


def summed(parts: Iterable[TableFingerprint], size_bytes: int = 0) -> TableFingerprint:
    """The fingerprint of rows split in parts (a table's chunks): counts and digests add up."""
    rows = digest = 0
    for part in parts:  # once, as they come: a table's chunks are not all made objects at once
        rows, digest = rows + part.rows, digest + int(part.digest)
    return TableFingerprint(rows, str(digest), size_bytes)


def set_stable_output(conn: psycopg.Connection) -> None:
    conn.execute("; ".join(_STABLE_OUTPUT))  # one round trip (no parameters, so several statements go)


def large_object_fingerprint(conn: psycopg.Connection) -> TableFingerprint:
    """Count and digest of the database's large objects, each by its OID and content."""
    rows, digest = conn.execute(_LARGE_OBJECTS).fetchone()
    return TableFingerprint(rows, str(digest))


# Each large object by its OID (pg_dump keeps it) and content; lo_get needs SELECT on it, as pg_dump does.
_LARGE_OBJECTS = """SELECT count(*), coalesce(sum(hash_record_extended(ROW(m.oid, lo_get(m.oid)), 0)), 0)
                    FROM pg_largeobject_metadata m"""
# Types whose binary hash is the same on every server: no OIDs inside (unlike enums, reg*,
# oid), no collation-dependent comparison. Everything else is hashed through its text.
_BINARY_HASHED_TYPES = (
    "bool", "int2", "int4", "int8", "float4", "float8", "numeric", "date", "time", "timetz",
    "timestamp", "timestamptz", "interval", "uuid", "bytea", "jsonb", "inet", "macaddr", "macaddr8",
)
# Strings hash by their bytes under a deterministic collation; "C" makes that explicit.
_STRING_TYPES = ("text", "varchar", "bpchar", "name")
# Each column of each table given (by its 1-based place in the arrays), as row_hash hashes it.
_COLUMN_HASH_INPUTS = """
    SELECT r.i, a.attname, format_type(base.oid, NULL),
           base.typname = ANY(%(binary)s) OR elem.typname = ANY(%(binary)s),
           base.typname = ANY(%(strings)s) OR elem.typname = ANY(%(strings)s), t.typtype = 'd'
    FROM unnest(%(schemas)s::text[], %(tables)s::text[]) WITH ORDINALITY AS r(schema, name, i)
    JOIN pg_attribute a ON a.attrelid = (quote_ident(r.schema) || '.' || quote_ident(r.name))::regclass
    JOIN pg_type t ON t.oid = a.atttypid
    JOIN pg_type base ON base.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
    LEFT JOIN pg_type elem ON elem.oid = base.typelem AND base.typcategory = 'A'
    WHERE a.attnum > 0 AND NOT a.attisdropped"""
# A digest statement's rows reach the client only when it ends, and the source's stall watchdog
# sees that silence: one statement digests at most this many tables and, beyond its first table,
# this many bytes of them (a larger table goes alone), so no silence is much longer than
# digesting one large table alone was.
DIGEST_BATCH_TABLES = 200
DIGEST_BATCH_BYTES = 64 * 1024 * 1024
# A chunked digest groups by ``width_bucket`` of the key, and the planner expects a group for each
# key value (the key is unique; it cannot know the chunks fold them into a few thousand). Planned
# for millions of groups, it sorts every row, spilling to disk, or hashes them in one process. Told
# that sorting is the worse way and that the partial aggregates' few rows cost nothing to gather, it
# hashes the chunks, in parallel workers where that is cheaper, as it reads a whole table's digest:
# measured on 1 GB, staging's chunked digests took 1.2 s instead of 2.2 s (0.8 s whole).
CHUNKED_DIGEST_PLANNER = {"enable_sort": "off", "parallel_tuple_cost": "0"}


@dataclass(frozen=True)
class TakenDigests:
    """A table's digests taken before a fingerprint reads the other tables' (staging's, as soon as
    its rows were in): of each chunk at ``bounds``, or of the whole table (under None) without them."""

    bounds: ChunkBounds | None
    parts: Mapping[int | None, TableFingerprint]


@dataclass(frozen=True)
class DigestedTable:
    """A table to digest: whole, or chunk by chunk where ``bounds`` cut it, of the rows ``where``
    picks (all by default); its size bounds its batch."""

    schema: str
    name: str
    size_bytes: int = 0
    bounds: ChunkBounds | None = None
    where: sql.Composable = field(default_factory=lambda: sql.SQL("true"), compare=False)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def table_digest(conn: psycopg.Connection, schema: str, table: str, *, columns: Collection[str] | None = None,
                 where: sql.Composable = sql.SQL("true")) -> tuple[int, str]:
    """Row count and content digest of one table, computed by the server.

    Each row goes through the 64-bit ``hash_record_extended`` (the hash behind hash
    partitioning, the same on every PostgreSQL version), summed exactly as numeric:
    order-independent, and a changed row goes unnoticed with a chance of about 2^-64. (A
    second, differently seeded hash took 40% more time for a margin no accidental
    corruption needs; backup manifests make do with a 32-bit CRC.) ``columns`` and ``where``
    narrow it to the rows and columns a copy carries of a table that also holds others (the
    users a migration adds to a project's ``auth.users``).
    """
    _, _, rows, digest = conn.execute(
        _digest_select(0, DigestedTable(schema, table), row_hash(conn, schema, table, columns), where)).fetchone()
    return rows, str(digest)


def chunk_digests(conn: psycopg.Connection, schema: str, table: str,
                  bounds: ChunkBounds) -> Mapping[int, TableFingerprint]:
    """Row count and digest of each chunk of the table that holds rows: the same sums as
    ``table_digest``, grouped, so a table's chunks add up to its digest."""
    return table_digests(conn, [DigestedTable(schema, table, bounds=bounds)])[0]


def table_digests(conn: psycopg.Connection,
                  tables: Sequence[DigestedTable]) -> list[Mapping[int | None, TableFingerprint]]:
    """Count and digest of each table (under the key None) or of each of its chunks that holds
    rows (under the chunk's number, in ``ChunkDigests``), as ``table_digest`` and ``chunk_digests``
    compute them: one statement per ``DIGEST_BATCH_TABLES`` tables or ``DIGEST_BATCH_BYTES`` of
    them, not one a table. The result rows are taken one at a time, not made objects all at once."""
    inputs = _column_hash_inputs(conn, [(table.schema, table.name) for table in tables])
    chunked = {i: ChunkDigests(table.bounds.chunks) for i, table in enumerate(tables) if table.bounds is not None}
    whole: dict[int, TableFingerprint] = {}
    sizes = [table.size_bytes for table in tables]
    with planned_with(conn, CHUNKED_DIGEST_PLANNER if chunked else {}):
        for batch in statement_batches(sizes, DIGEST_BATCH_TABLES, DIGEST_BATCH_BYTES):
            statement = sql.SQL(" UNION ALL ").join(
                _digest_select(i, tables[i], _row_hash(inputs[i]), tables[i].where) for i in batch)
            for i, chunk, rows, digest in conn.execute(statement):
                if chunk is None:
                    whole[i] = TableFingerprint(rows, str(digest))
                else:
                    chunked[i].add(chunk, rows, int(digest))
    return [chunked[i] if i in chunked else {None: whole[i]} for i in range(len(tables))]


def _digest_select(number: int, table: DigestedTable, hash: sql.Composable,
                   where: sql.Composable = sql.SQL("true")) -> sql.Composable:
    """The rows (number, chunk, count, digest) of one table: one row, chunk NULL, for the whole
    table; one per chunk holding rows where ``bounds`` cut it."""
    bucket, grouped = (sql.SQL("NULL::int"), sql.SQL("")) if table.bounds is None \
        else (table.bounds.bucket(), sql.SQL(" GROUP BY 2"))
    return sql.SQL("SELECT {}, {}, count(*), coalesce(sum({}), 0) FROM {} AS t WHERE {}{}").format(
        sql.Literal(number), bucket, hash, sql.Identifier(table.schema, table.name), where, grouped)


def statement_batches(sizes: Sequence[int], most: int, most_bytes: int) -> list[range]:
    """Consecutive runs of the items, each at most ``most`` of them and, beyond its first item,
    at most ``most_bytes`` in all."""
    batches: list[range] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= most or total + size > most_bytes):
            batches.append(range(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        batches.append(range(start, len(sizes)))
    return batches


def row_hash(conn: psycopg.Connection, schema: str, table: str, columns: Collection[str] | None = None) -> sql.Composable:
    """The 64-bit hash of a row ``t`` of the table that the digests sum (of ``columns`` only, if given)."""
    return _row_hash(_column_hash_inputs(conn, [(schema, table)])[0], columns)


def _row_hash(inputs: list[tuple], columns: Collection[str] | None = None) -> sql.Composable:
    """The hash of a row from its columns' hash inputs.

    Columns go in name order, so a copy whose physical column order differs (a partition
    attached with its own layout) compares equal; strings are hashed by their bytes (collation
    "C"), and types whose hash would differ between servers (enums and others hashed by OID) go
    in as text.
    """
    chosen = sorted(column for column in inputs if columns is None or column[0] in columns)
    row = sql.SQL("ROW({})").format(sql.SQL(", ").join(_hash_input(*column) for column in chosen))
    return sql.SQL("hash_record_extended({}, 0)").format(row)


def _column_hash_inputs(conn: psycopg.Connection, tables: Sequence[tuple[str, str]]) -> list[list[tuple]]:
    """Each table's columns as ``_hash_input`` takes them, for all ``tables`` in one round trip."""
    inputs: list[list[tuple]] = [[] for _ in tables]
    if not tables:
        return inputs
    for i, *column in conn.execute(_COLUMN_HASH_INPUTS, {
        "schemas": [schema for schema, _ in tables], "tables": [table for _, table in tables],
        "binary": list(_BINARY_HASHED_TYPES), "strings": list(_STRING_TYPES),
    }).fetchall():
        inputs[i - 1].append(tuple(column))
    return inputs


def _hash_input(name: str, base_type: str, binary: bool, string: bool, is_domain: bool) -> sql.Composable:
    column = sql.Identifier("t", name)
    if is_domain and (binary or string):
        column = sql.SQL("({})::{}").format(column, sql.SQL(base_type))
    if string:
        return sql.SQL('({}) COLLATE "C"').format(column)
    if binary:
        return column
    return sql.SQL('({})::text COLLATE "C"').format(column)
