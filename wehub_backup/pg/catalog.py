"""Read-only catalog queries that plan a copy before anything is changed."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class ExtensionInfo:
    oid: int
    name: str
    schema: str
    version: str
    config_relation_oids: tuple[int, ...] = ()
    member_schemas: tuple[str, ...] = ()
    members: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RoleInfo:
    name: str
    superuser: bool
    inherit: bool
    bypassrls: bool
    member_of: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()


@dataclass(frozen=True)
class EventTriggerInfo:
    oid: int
    name: str
    owner: str


@dataclass(frozen=True)
class ServerInfo:
    version_num: int
    version: str
    database: str
    encoding: str
    current_user: str
    superuser: bool
    autovacuum: bool = True  # autovacuum and the statistics it needs (track_counts) are on

    @property
    def major(self) -> int:
        return self.version_num // 10000


@dataclass
class DatabaseCatalog:
    """What a source database holds, as far as planning a dump needs to know."""

    server: ServerInfo
    schemas: list[str]
    unreadable_relations: list[tuple[str, str]]
    extensions: list[ExtensionInfo]
    roles: list[RoleInfo]
    event_triggers: list[EventTriggerInfo]
    size_bytes: int = 0
    table_bytes: int = 0  # every table's, large objects (pg_largeobject) included
    large_object_bytes: int = 0
    bytea_bytes: int = 0

    @property
    def first_dump_egress(self) -> int:
        """What a first dump is expected to receive: the database's size, its bytea data twice.

        ``COPY`` sends bytea as hex text, two characters per byte, so a database of files or
        images costs about twice its size on the wire.
        """
        return self.size_bytes + self.bytea_bytes


def server_info(conn: psycopg.Connection) -> ServerInfo:
    row = conn.execute(
        """SELECT current_setting('server_version_num')::int, current_setting('server_version'),
                  current_database(), pg_encoding_to_char(d.encoding), current_user, r.rolsuper,
                  current_setting('autovacuum')::bool AND current_setting('track_counts')::bool
           FROM pg_database d, pg_roles r
           WHERE d.datname = current_database() AND r.rolname = current_user"""
    ).fetchone()
    return ServerInfo(*row)


def read_catalog(conn: psycopg.Connection) -> DatabaseCatalog:
    """Everything planning needs, in a handful of queries (a few kilobytes of egress)."""
    table_bytes, large_object_bytes = conn.execute(_TABLE_BYTES).fetchone()
    return DatabaseCatalog(
        server=server_info(conn),
        schemas=[r[0] for r in conn.execute(
            """SELECT nspname FROM pg_namespace
               WHERE nspname NOT IN ('pg_catalog', 'information_schema')
                 AND nspname !~ '^pg_(toast|temp_|toast_temp_)' ORDER BY 1""")],
        unreadable_relations=[(r[0], r[1]) for r in conn.execute(
            """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'p', 'S', 'm', 'f')
                 AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
                 AND NOT has_table_privilege(c.oid, 'SELECT')
                 AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                 AND d.objid = c.oid AND d.deptype = 'e')
               ORDER BY 1, 2""")],
        extensions=_extensions(conn),
        roles=_roles(conn),
        event_triggers=[EventTriggerInfo(*r) for r in conn.execute(
            "SELECT e.oid, e.evtname, pg_get_userbyid(e.evtowner) FROM pg_event_trigger e ORDER BY 2")],
        size_bytes=conn.execute("SELECT pg_database_size(current_database())").fetchone()[0],
        table_bytes=table_bytes,
        large_object_bytes=large_object_bytes,
        bytea_bytes=conn.execute(_BYTEA_BYTES).fetchone()[0],
    )


# pg_table_size opens each table, so it waits behind a session holding (or queued for) the
# table's ACCESS EXCLUSIVE lock; such a table's size is the catalog's estimate instead, and the
# dump, which needs that table, names the session if the lock stays.
_TABLE_BYTES = """
WITH exclusive AS MATERIALIZED (
  SELECT relation FROM pg_locks
  WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock' AND pid <> pg_backend_pid()
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
SELECT coalesce(sum(size), 0)::bigint,
       coalesce(sum(size) FILTER (WHERE oid = 'pg_catalog.pg_largeobject'::regclass), 0)::bigint
FROM (SELECT c.oid, CASE WHEN c.oid IN (SELECT relation FROM exclusive)
                         THEN c.relpages::bigint * current_setting('block_size')::bigint
                         ELSE pg_table_size(c.oid) END AS size
      FROM pg_class c WHERE c.relkind IN ('r', 'm')) tables"""


# The on-disk bytes of bytea data (columns of bytea, a domain over it, or an array of it), from
# the catalog alone. A table's TOAST data is taken for bytea (large values are what TOAST
# holds); its main fork counts by the bytea columns' share of the average row width in the
# planner statistics, or whole where the table has none yet. An estimate on the high side,
# for values stored as they are: text in the same table's TOAST counts too, while bytea that
# TOAST compressed costs more on the wire than this. Large objects (pg_catalog) are left out:
# pg_dump reads them in binary. A table another session holds ACCESS EXCLUSIVE is sized from
# the catalog, as in _TABLE_BYTES, so the plan never waits behind it.
_BYTEA_BYTES = """
WITH bytea_columns AS (
  SELECT a.attrelid, a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  WHERE a.attnum > 0 AND NOT a.attisdropped AND 'pg_catalog.bytea'::pg_catalog.regtype IN (t.oid, t.typbasetype, t.typelem)
), tables AS (
  SELECT c.oid, c.reltoastrelid, n.nspname, c.relname FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r' AND c.oid IN (SELECT attrelid FROM bytea_columns)
    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
), shares AS (
  SELECT t.oid, sum(s.avg_width) FILTER (WHERE b.attname IS NOT NULL)::float8 / nullif(sum(s.avg_width), 0) AS share
  FROM tables t JOIN pg_catalog.pg_stats s ON s.schemaname = t.nspname AND s.tablename = t.relname AND NOT s.inherited
  LEFT JOIN bytea_columns b ON b.attrelid = t.oid AND b.attname = s.attname
  GROUP BY t.oid
), exclusive AS MATERIALIZED (
  SELECT relation FROM pg_catalog.pg_locks
  WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock' AND pid <> pg_catalog.pg_backend_pid()
    AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
), sizes AS (
  SELECT r.oid, CASE WHEN r.oid IN (SELECT relation FROM exclusive)
                     THEN r.relpages::bigint * pg_catalog.current_setting('block_size')::bigint
                     ELSE pg_catalog.pg_relation_size(r.oid) END AS bytes
  FROM pg_catalog.pg_class r WHERE r.oid IN (SELECT oid FROM tables UNION SELECT reltoastrelid FROM tables)
)
SELECT coalesce(sum(coalesce((SELECT bytes FROM sizes WHERE sizes.oid = t.reltoastrelid), 0)
                    + (SELECT bytes FROM sizes WHERE sizes.oid = t.oid) * coalesce(s.share, 1)), 0)::bigint
FROM tables t LEFT JOIN shares s ON s.oid = t.oid"""


def available_extensions(conn: psycopg.Connection) -> dict[str, str]:
    """Extensions the server could create (its installed packages) and the version it would create."""
    return {r[0]: r[1] for r in conn.execute("SELECT name, default_version FROM pg_available_extensions")}


def _extensions(conn: psycopg.Connection) -> list[ExtensionInfo]:
    rows = conn.execute(
        """SELECT e.oid, e.extname, n.nspname, e.extversion, coalesce(e.extconfig, '{}')::oid[]::int8[],
                  ARRAY(SELECT s.nspname FROM pg_depend d JOIN pg_namespace s ON s.oid = d.objid
                        WHERE d.classid = 'pg_namespace'::regclass AND d.refobjid = e.oid
                          AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'),
                  ARRAY(SELECT ARRAY[o.nspname::text, m.objname::text] FROM pg_depend d
                        JOIN LATERAL (
                          SELECT c.relnamespace AS ns, c.relname AS objname FROM pg_class c
                            WHERE d.classid = 'pg_class'::regclass AND c.oid = d.objid
                          UNION ALL SELECT p.pronamespace, p.proname FROM pg_proc p
                            WHERE d.classid = 'pg_proc'::regclass AND p.oid = d.objid
                          UNION ALL SELECT t.typnamespace, t.typname FROM pg_type t
                            WHERE d.classid = 'pg_type'::regclass AND t.oid = d.objid
                          UNION ALL SELECT o.oprnamespace, o.oprname FROM pg_operator o
                            WHERE d.classid = 'pg_operator'::regclass AND o.oid = d.objid
                          UNION ALL SELECT c.opcnamespace, c.opcname FROM pg_opclass c
                            WHERE d.classid = 'pg_opclass'::regclass AND c.oid = d.objid
                          UNION ALL SELECT f.opfnamespace, f.opfname FROM pg_opfamily f
                            WHERE d.classid = 'pg_opfamily'::regclass AND f.oid = d.objid
                        ) m ON true JOIN pg_namespace o ON o.oid = m.ns
                        WHERE d.refobjid = e.oid AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')
           FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY 2"""
    )
    return [
        ExtensionInfo(oid, name, schema, version, tuple(config), tuple(schemas), tuple((m[0], m[1]) for m in members))
        for oid, name, schema, version, config, schemas, members in rows
    ]


def _roles(conn: psycopg.Connection) -> list[RoleInfo]:
    rows = conn.execute(
        """SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolbypassrls,
                  ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                        WHERE m.member = r.oid AND g.rolname !~ '^pg_' ORDER BY 1),
                  coalesce(r.rolconfig, '{}')
           FROM pg_roles r WHERE r.rolname !~ '^pg_' ORDER BY 1"""
    )
    return [RoleInfo(name, sup, inh, byp, tuple(member_of), tuple(settings))
            for name, sup, inh, byp, member_of, settings in rows]


# Types whose text goes through lc_monetary: money, and arrays, domains and row types holding it.
_MONEY_COLUMNS = """
WITH RECURSIVE money_types(oid) AS (
  SELECT 'pg_catalog.money'::pg_catalog.regtype::oid
  UNION
  SELECT t.oid FROM money_types m
    LEFT JOIN pg_catalog.pg_attribute part ON part.atttypid = m.oid AND NOT part.attisdropped
    JOIN pg_catalog.pg_type t ON (t.typelem = m.oid AND t.typcategory = 'A') OR t.typbasetype = m.oid
                              OR (t.typtype = 'c' AND t.typrelid = part.attrelid))
SELECT pg_catalog.format('%%I.%%I.%%I', n.nspname, c.relname, a.attname)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p', 'm')
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
  AND a.atttypid IN (SELECT oid FROM money_types)
ORDER BY 1"""


def money_columns(conn: psycopg.Connection, schemas: list[str]) -> list[str]:
    """Columns of ``schemas`` whose values print through lc_monetary ("$1,234.50" or "1.234,50 €")."""
    return [r[0] for r in conn.execute(_MONEY_COLUMNS, (schemas,))]
