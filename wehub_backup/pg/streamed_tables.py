"""The tables the stream engine copies, as the held snapshot sees them, and the ranges it copies
them in: the plan of a copy, read from the catalog, before any row moves (``stream`` moves them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from wehub_backup.pg.chunks import key_range_statements
from wehub_backup.pg.names import quote_pattern

# TID range scans (``ctid >= '(a,0)'``) read only the pages asked for since PostgreSQL 14; an
# older source reads each table whole.
TID_RANGE_SCAN_SINCE = 14
# The first user-defined OID: types below it are built in, the same on every server of a major version.
FIRST_USER_OID = 16384

# The tables whose rows the copy carries, as the snapshot sees them: ordinary tables of the kept
# schemas (partitions, not their parents) that an extension does not own, with their non-generated
# columns and whether binary COPY suits them: every column of a built-in type with binary I/O that
# holds no OID of a catalog object (unlike the reg* types), and one of them bytea, whose text form
# (hex) is twice its size. Without bytea, text is what pg_dump sends and no larger: binary frames
# every value with four bytes of length, more than the digits of a small number take. Last, the
# catalog entries whose builds read only the table's rows: its indexes, and its primary key,
# unique and exclusion constraints. And whether another table inherits it (a digest of it reads those rows too).
_STREAMED_TABLES = """
SELECT c.oid, n.nspname, c.relname, pg_relation_size(c.oid), current_setting('block_size')::int,
       array_agg(a.attname::text ORDER BY a.attnum),
       bool_and(t.oid < %(first_user_oid)s AND t.typsend::oid <> 0 AND t.typreceive::oid <> 0
                AND t.typname !~ '^_?reg') AND bool_or(t.oid = 'bytea'::regtype),
       array_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attname),
       ARRAY(SELECT ARRAY['pg_class'::regclass::oid, i.indexrelid] FROM pg_index i WHERE i.indrelid = c.oid
             UNION ALL
             SELECT ARRAY['pg_constraint'::regclass::oid, k.oid] FROM pg_constraint k
             WHERE k.conrelid = c.oid AND k.contype IN ('p', 'u', 'x')),
       EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhparent = c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relkind = 'r' AND n.nspname = ANY(%(schemas)s) AND NOT (n.nspname || '.' || c.relname) = ANY(%(excluded)s)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
GROUP BY c.oid, n.nspname, c.relname
ORDER BY pg_relation_size(c.oid) DESC, n.nspname, c.relname"""


@dataclass(frozen=True)
class StreamedTable:
    oid: int
    schema: str
    name: str
    size_bytes: int
    block_size: int
    columns: tuple[str, ...]  # the non-generated ones: staging computes the generated ones itself
    binary_io: bool  # binary COPY reads it the same way and sends fewer bytes (see _STREAMED_TABLES)
    definition: tuple[str, ...] = ()  # the copied columns with their types: a copy of it takes the same rows
    # (catalog OID, object OID) of its indexes and of its constraints that build one: what of the
    # archive's post-data can be built as soon as its rows are in (foreign keys read other tables)
    own_indexes: tuple[tuple[int, int], ...] = ()
    # Another table inherits it: its digest (which reads without ONLY, as every digest does) counts
    # their rows too, so it is not final when its own rows are in.
    inherited: bool = False

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def streamed_tables(conn: psycopg.Connection, schemas: list[str],
                    excluded_tables: list[tuple[str, str]]) -> list[StreamedTable]:
    """The tables whose rows the stream engine copies, largest first, read in ``conn``'s snapshot."""
    rows = conn.execute(_STREAMED_TABLES, {"schemas": schemas, "first_user_oid": FIRST_USER_OID,
                                           "excluded": [f"{s}.{t}" for s, t in excluded_tables]}).fetchall()
    return [StreamedTable(oid, schema, name, size, block, tuple(columns), bool(binary), tuple(definition),
                          tuple((catalog, object_oid) for catalog, object_oid in indexes), inherited)
            for oid, schema, name, size, block, columns, binary, definition, indexes, inherited in rows]


def exclude_table_data_arguments(tables: list[StreamedTable]) -> list[str]:
    """pg_dump arguments leaving the streamed tables' rows out of the archive (exact-name patterns)."""
    return [f"--exclude-table-data={quote_pattern(t.schema)}.{quote_pattern(t.name)}" for t in tables]


@dataclass(frozen=True)
class CopyRange:
    """One staging transaction's worth of a table: pages [first_page, end_page), the rows a
    condition selects (an incremental copy's chunks), or the whole table; read from the source's
    snapshot, or ``from_copy``: from the current copy on the VPS."""

    table: StreamedTable
    first_page: int = 0
    end_page: int | None = None  # None: to the table's end (rows added since its size was read included)
    whole: bool = True
    selection: sql.Composable | None = field(default=None, compare=False)
    from_copy: bool = False
    label: str = ""  # what ``selection`` selects, in words
    replaces: bool = False  # staging already holds these rows' old versions (a file copy): delete them first

    def describe(self) -> str:
        if self.selection is not None:
            return f"{self.table.qualified} {self.label}"
        if self.whole:
            return self.table.qualified
        end = f"{self.end_page}" if self.end_page is not None else "end"
        return f"{self.table.qualified} pages {self.first_page}-{end}"

    def planner_settings(self) -> tuple[str, ...]:
        """What the sessions reading and replacing these rows set, so the key's index finds them."""
        return key_range_statements() if self.selection is not None else ()

    def where(self) -> sql.Composable:
        if self.selection is not None:
            return sql.SQL(" WHERE ") + self.selection
        if self.whole:
            return sql.SQL("")
        lower = sql.SQL(" WHERE ctid >= {}::tid").format(sql.Literal(f"({self.first_page},0)"))
        if self.end_page is None:
            return lower
        return lower + sql.SQL(" AND ctid < {}::tid").format(sql.Literal(f"({self.end_page},0)"))


def copy_ranges(tables: list[StreamedTable], range_bytes: int, source_major: int) -> list[CopyRange]:
    """The copy's work, largest tables first; a table over ``range_bytes`` in page ranges of that size."""
    ranges: list[CopyRange] = []
    for table in sorted(tables, key=lambda t: t.size_bytes, reverse=True):
        if table.size_bytes <= range_bytes or source_major < TID_RANGE_SCAN_SINCE:
            ranges.append(CopyRange(table))
            continue
        step = max(1, range_bytes // table.block_size)
        pages = table.size_bytes // table.block_size
        starts = list(range(0, pages, step))
        ranges += [CopyRange(table, start, start + step, whole=False) for start in starts[:-1]]
        ranges.append(CopyRange(table, starts[-1], None, whole=False))
    return ranges
