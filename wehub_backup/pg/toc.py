"""An archive's table of contents, as ``pg_restore --list`` prints it."""

from __future__ import annotations

import re
from pathlib import Path

from wehub_backup.pg.clients import PgClient
from wehub_backup.pg.processes import run_tool

# A pg_restore --list entry: dump id, catalog, object OID, then "TYPE schema name owner".
TOC_ENTRY = re.compile(r"^(?P<id>\d+); (?P<catalog>\d+) (?P<oid>\d+) (?P<rest>.+)$")
_MULTIWORD_DESCS = (
    "MATERIALIZED VIEW DATA", "PUBLICATION TABLES IN SCHEMA", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY",
    "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "FOREIGN DATA WRAPPER", "SEQUENCE OWNED BY", "MATERIALIZED VIEW",
    "PUBLICATION TABLE", "CHECK CONSTRAINT", "OPERATOR CLASS", "OPERATOR FAMILY", "SECURITY LABEL", "FOREIGN TABLE",
    "FOREIGN SERVER", "USER MAPPING", "ACCESS METHOD", "EVENT TRIGGER", "FK CONSTRAINT", "ROW SECURITY",
    "SEQUENCE SET", "LARGE OBJECT", "DEFAULT ACL", "TABLE DATA", "TABLE ATTACH", "INDEX ATTACH",
)


def entry_schema(rest: str, source_schemas: list[str]) -> str | None:
    """The namespace field of a listing entry (after its type, which may be several words).

    The listing does not quote names, so a schema named "realtime archive" reads like schema
    "realtime"; the longest schema of the source the field starts with is the one meant.
    """
    fields = rest.split(" ", 1)[1] if " " in rest else ""
    for desc in _MULTIWORD_DESCS:
        if rest.startswith(desc + " "):
            fields = rest[len(desc) + 1:]
            break
    named = [s for s in source_schemas if fields == s or fields.startswith(s + " ")]
    if named:
        return max(named, key=len)
    return fields.split(" ", 1)[0] if fields else None


_LEFT_OUT_ENTRY = re.compile(r"^;\d+;")


def left_out_count(listing: str) -> int:
    """Entries of a restore list that are commented out (``;<id>;``): what ``pg_restore -L`` skips."""
    return sum(1 for line in listing.splitlines() if _LEFT_OUT_ENTRY.match(line))


def archive_listing(client: PgClient, archive: Path, env: dict[str, str], listing_path: Path) -> str:
    """``pg_restore --list`` of an archive, kept in ``listing_path`` (a run's evidence) and returned."""
    run_tool([client.program("pg_restore"), "--list", str(archive)], env, stdout_path=listing_path)
    return listing_path.read_text(encoding="utf-8")
