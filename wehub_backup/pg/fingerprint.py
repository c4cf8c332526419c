"""Server-side fingerprints of a database, to prove a copy equals its source.

A fingerprint is each table's row count and digest (``digests``), sequence positions, large
objects and the count of every kind of object, all read in one session. The source side is
computed inside the same snapshot pg_dump reads, so concurrent writers cannot cause a false
mismatch.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

import psycopg
from psycopg import sql

from wehub_backup.pg.chunks import ChunkBounds, ChunkKey, chunk_keys
from wehub_backup.pg.digests import (
    DigestedTable,
    TableFingerprint,
    TakenDigests,
    large_object_fingerprint,
    set_stable_output,
    statement_batches,
    summed,
    table_digests,
)

_OBJECT_COUNTS = {
    "tables": "SELECT count(*) FROM pg_class c {scope} AND c.relkind IN ('r', 'p')",
    "views": "SELECT count(*) FROM pg_class c {scope} AND c.relkind = 'v'",
    "materialized views": "SELECT count(*) FROM pg_class c {scope} AND c.relkind = 'm'",
    "sequences": "SELECT count(*) FROM pg_class c {scope} AND c.relkind = 'S'",
    "indexes": "SELECT count(*) FROM pg_class c {scope} AND c.relkind IN ('i', 'I')",
    "constraints": """SELECT count(*) FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid {scope}""",
    "triggers": """SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid {scope}
                   AND NOT t.tgisinternal""",
    "policies": "SELECT count(*) FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid {scope}",
    "functions": """SELECT count(*) FROM pg_proc f JOIN pg_namespace n ON n.oid = f.pronamespace
                    WHERE n.nspname = ANY(%(schemas)s) AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_proc'::regclass AND d.objid = f.oid AND d.deptype = 'e')""",
    "rules": """SELECT count(*) FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class {scope}
                AND r.rulename <> '_RETURN'""",
    "statistics objects": "SELECT count(*) FROM pg_statistic_ext x JOIN pg_class c ON c.oid = x.stxrelid {scope}",
    "publication tables": "SELECT count(*) FROM pg_publication_rel r JOIN pg_class c ON c.oid = r.prrelid {scope}",
}


def _schema_objects(catalog: str, namespace: str, where: str = "true") -> str:
    """Count of a catalog's objects in the kept schemas that no extension made.

    An extension's members are its own; so is what PostgreSQL made along with them (the
    array type of an extension's type, the relation of its composite type).
    """
    return f"""SELECT count(*) FROM {catalog} x JOIN pg_namespace n ON n.oid = x.{namespace}
               WHERE n.nspname = ANY(%(schemas)s) AND ({where}) AND NOT EXISTS ({_extension_made(catalog)})"""


def _extension_made(catalog: str) -> str:
    return f"""SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass AND d.objid = x.oid
                 AND (d.deptype = 'e' OR d.deptype = 'i' AND EXISTS (SELECT 1 FROM pg_depend e
                      WHERE e.classid = d.refclassid AND e.objid = d.refobjid AND e.deptype = 'e'))"""


# Types the app made itself: not the ones PostgreSQL makes along with another object (array and
# multirange types, row types of tables), which depend on that object internally.
_OBJECT_COUNTS.update({
    "types": _schema_objects("pg_type", "typnamespace", """x.typtype <> 'd' AND NOT EXISTS (SELECT 1 FROM pg_depend i
        WHERE i.classid = 'pg_type'::regclass AND i.objid = x.oid AND i.deptype = 'i')"""),
    "domains": _schema_objects("pg_type", "typnamespace", "x.typtype = 'd'"),
    # NOT NULL of a domain is a constraint row from PostgreSQL 17 on, a flag of the type before.
    "domain constraints": _schema_objects("pg_constraint", "connamespace", "x.contypid <> 0 AND x.contype <> 'n'"),
    "aggregates": _schema_objects("pg_proc", "pronamespace", "x.prokind = 'a'"),
    "operators": _schema_objects("pg_operator", "oprnamespace"),
    "operator classes": _schema_objects("pg_opclass", "opcnamespace"),
    "operator families": _schema_objects("pg_opfamily", "opfnamespace"),
    "collations": _schema_objects("pg_collation", "collnamespace"),
    "conversions": _schema_objects("pg_conversion", "connamespace"),
    "text search configurations": _schema_objects("pg_ts_config", "cfgnamespace"),
    "text search dictionaries": _schema_objects("pg_ts_dict", "dictnamespace"),
    # A cast is the app's when one of its types or its function is.
    "casts": f"""SELECT count(*) FROM pg_cast x JOIN pg_type s ON s.oid = x.castsource
                 JOIN pg_type t ON t.oid = x.casttarget LEFT JOIN pg_proc p ON p.oid = x.castfunc
                 WHERE x.oid >= 16384 AND NOT EXISTS ({_extension_made("pg_cast")})
                   AND (SELECT array_agg(oid) FROM pg_namespace WHERE nspname = ANY(%(schemas)s))
                       && ARRAY[s.typnamespace, t.typnamespace, coalesce(p.pronamespace, 0)]""",
})
# Relations of kept schemas that are neither extension members nor excluded tables.
_RELATION_SCOPE = """JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_index ix ON ix.indexrelid = c.oid
    WHERE n.nspname = ANY(%(schemas)s)
      AND NOT (n.nspname || '.' || coalesce((SELECT t.relname FROM pg_class t WHERE t.oid = ix.indrelid), c.relname))
              = ANY(%(excluded)s)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = coalesce(ix.indrelid, c.oid) AND d.deptype = 'e')"""


@dataclass
class DatabaseFingerprint:
    """Row counts and content digests per table, sequence positions, and object counts."""

    tables: dict[str, TableFingerprint] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)
    object_counts: dict[str, int] = field(default_factory=dict)
    large_objects: TableFingerprint | None = None  # count and digest, where the copy carries them
    chunks: dict[str, Mapping[int, TableFingerprint]] = field(default_factory=dict)  # tables cut as asked

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables.values())


def fingerprint_database(
    conn: psycopg.Connection,
    schemas: list[str],
    excluded_tables: list[tuple[str, str]],
    sequences: dict[str, int] | None = None,
    *,
    large_objects: bool = False,
    chunked: Mapping[str, ChunkBounds] | None = None,
    taken: Mapping[str, TakenDigests] | None = None,
    owed: Collection[str] = (),
) -> DatabaseFingerprint:
    """Fingerprint the kept schemas of the database ``conn`` is connected to.

    Run it inside a REPEATABLE READ transaction (the dump's snapshot) on the source, and
    in any session on the restored copy. Sequence positions are read here unless the caller
    has them already (the backup reads them before pg_dump starts: they move outside
    transactions). Large objects belong to no schema; ``large_objects`` adds them (the
    backup copies them, the migration leaves them out). A table of ``chunked`` whose primary key is
    still the one its bounds were cut by is digested chunk by chunk (``chunks``), its digest their sum.
    A table of ``taken`` is not read again: its digests are those (taken as its rows landed). The
    tables ``owed`` are left out, to be digested later in the same snapshot (``with_tables``).
    """
    set_stable_output(conn)
    params = {"schemas": schemas, "excluded": _qualified(excluded_tables)}
    if sequences is None:
        sequences = sequence_positions(conn, schemas, excluded_tables)
    result = DatabaseFingerprint(sequences=sequences, object_counts=_object_counts(conn, params))
    keys = chunk_keys(conn, schemas) if chunked else {}
    tables = [DigestedTable(schema, table, size, _current_bounds((chunked or {}).get(f"{schema}.{table}"),
                                                                 keys.get(f"{schema}.{table}")))
              for schema, table, size in _leaf_tables(conn, params) if f"{schema}.{table}" not in owed]
    taken = taken or {}
    unread = [table for table in tables if table.qualified not in taken]
    read = dict(zip((table.qualified for table in unread), table_digests(conn, unread)))
    for table in tables:
        digests = taken.get(table.qualified) or TakenDigests(table.bounds, read[table.qualified])
        result.tables[table.qualified] = summed(digests.parts.values(), table.size_bytes)
        if digests.bounds is not None:
            result.chunks[table.qualified] = digests.parts
    if large_objects:
        result.large_objects = large_object_fingerprint(conn)
    return result


def with_tables(fingerprint: DatabaseFingerprint, tables: Mapping[str, TableFingerprint]) -> DatabaseFingerprint:
    """``fingerprint`` with the digests of ``tables`` it left owed, taken since in its snapshot."""
    return replace(fingerprint, tables={**fingerprint.tables, **tables})


def _object_counts(conn: psycopg.Connection, params: dict) -> dict[str, int]:
    """Every kind's count in one statement (one round trip, whatever the number of kinds)."""
    counts = conn.execute("SELECT " + ", ".join(f"({query.format(scope=_RELATION_SCOPE)})"
                                                for query in _OBJECT_COUNTS.values()), params).fetchone()
    return dict(zip(_OBJECT_COUNTS, counts))


def _current_bounds(bounds: ChunkBounds | None, key: ChunkKey | None) -> ChunkBounds | None:
    """The bounds a table was cut by, while its primary key is still the one they were cut by."""
    return bounds if bounds is not None and key == bounds.key else None


def _qualified(tables: list[tuple[str, str]]) -> list[str]:
    return [f"{schema}.{table}" for schema, table in tables]


# Sequences read in one statement: each is one row of a one-page relation.
SEQUENCE_BATCH = 1000


def _leaf_tables(conn: psycopg.Connection, params: dict) -> list[tuple[str, str, int]]:
    """Tables that hold rows (partitions, not their parents), with their size on disk."""
    return conn.execute(
        "SELECT n.nspname, c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
        + _RELATION_SCOPE + " AND c.relkind = 'r' ORDER BY 1, 2",
        params,
    ).fetchall()


def sequence_positions(conn: psycopg.Connection, schemas: list[str],
                       excluded_tables: list[tuple[str, str]]) -> dict[str, int]:
    """Each readable sequence's next value to be handed out (reads are not transactional)."""
    rows = conn.execute(
        """SELECT n.nspname, c.relname, s.seqincrement FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid
           WHERE c.relkind = 'S' AND n.nspname = ANY(%s) AND NOT (n.nspname || '.' || c.relname) = ANY(%s)
             AND has_table_privilege(c.oid, 'SELECT')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                             AND d.objid = c.oid AND d.deptype = 'e')
           ORDER BY 1, 2""",
        (schemas, _qualified(excluded_tables)),
    ).fetchall()
    states = _sequence_states(conn, [(schema, name) for schema, name, _ in rows])
    return {f"{schema}.{name}": last_value + increment if is_called else last_value
            for (schema, name, increment), (last_value, is_called) in zip(rows, states)}


def _sequence_states(conn: psycopg.Connection, sequences: list[tuple[str, str]]) -> list[tuple[int, bool]]:
    """Each sequence's ``last_value`` and ``is_called``, ``SEQUENCE_BATCH`` sequences a statement."""
    states: list[tuple[int, bool]] = [(0, False)] * len(sequences)
    for batch in statement_batches([0] * len(sequences), SEQUENCE_BATCH, 0):
        statement = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}, last_value, is_called FROM {}").format(
                sql.Literal(i), sql.Identifier(*sequences[i])) for i in batch)
        for i, last_value, is_called in conn.execute(statement).fetchall():
            states[i] = (last_value, is_called)
    return states


def compare_fingerprints(
    source: DatabaseFingerprint,
    copy: DatabaseFingerprint,
    source_sequences_after: dict[str, int] | None = None,
) -> list[str]:
    """Every difference, each naming its table or object; empty means the copy is faithful.

    Sequences advance outside transactions, so a copy's position must lie between the
    source's before the dump and after it (a writer may have drawn values meanwhile).
    """
    problems = []
    for name in sorted(source.tables.keys() | copy.tables.keys()):
        want, got = source.tables.get(name), copy.tables.get(name)
        if want is None or got is None:
            problems.append(f"table {name}: {'missing from the copy' if got is None else 'not in the source'}")
        elif want.rows != got.rows:
            problems.append(f"table {name}: row count {got.rows} in the copy, {want.rows} in the source")
        elif want.digest != got.digest:
            problems.append(f"table {name}: content differs ({want.rows} rows each)")
    after = source_sequences_after or source.sequences
    for name in sorted(source.sequences.keys() | copy.sequences.keys()):
        low, high, got = source.sequences.get(name), after.get(name), copy.sequences.get(name)
        if got is None or low is None:
            problems.append(f"sequence {name}: {'missing from the copy' if got is None else 'not in the source'}")
        elif not min(low, high or low) <= got <= max(low, high or low):
            problems.append(f"sequence {name}: next value {got} in the copy, {low} in the source")
    problems += _large_object_problems(source.large_objects, copy.large_objects)
    for kind, want_count in source.object_counts.items():
        got_count = copy.object_counts.get(kind)
        if got_count != want_count:
            problems.append(f"{kind}: {got_count} in the copy, {want_count} in the source")
    return problems


def _large_object_problems(want: TableFingerprint | None, got: TableFingerprint | None) -> list[str]:
    if want is None or want == got:
        return []
    if got is None or got.rows != want.rows:
        return [f"large objects: {got.rows if got else 'none'} in the copy, {want.rows} in the source"]
    return [f"large objects: content differs ({want.rows} each)"]
