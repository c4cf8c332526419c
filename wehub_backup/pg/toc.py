"""An archive's table of contents, as ``pg_restore --list`` prints it."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from wehub_backup.files import write_private_text
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


# Lines of a restore script that differ between two dumps of the same schema: comments (they name
# the server and pg_dump versions and the dump IDs) and psql's per-script \restrict key.
_SCRIPT_NOISE = re.compile(r"^(--|\\(un)?restrict )")
# Large objects are compared by their fingerprint: a schema-only dump of a database leaves them out.
_LARGE_OBJECT_ENTRY = re.compile(r"\b(LARGE OBJECT|BLOBS?)\b")


def only_entries(listing: str, kinds: tuple[str, ...]) -> str:
    """A restore list of only the listing's entries of these types (the others commented out)."""
    prefixes = tuple(f"{kind} " for kind in kinds)
    return _restore_list(listing, lambda entry: entry["rest"].startswith(prefixes))


def with_entries(listing: str, dump_ids: set[int]) -> str:
    """A restore list of only these entries of the listing (the others commented out)."""
    return _restore_list(listing, lambda entry: int(entry["id"]) in dump_ids)


def without_entries(listing: str, dump_ids: set[int]) -> str:
    """The listing as a restore list with these entries commented out."""
    return _restore_list(listing, lambda entry: int(entry["id"]) not in dump_ids)


def _restore_list(listing: str, kept: Callable[[re.Match[str]], bool]) -> str:
    """The listing with the entries ``kept`` refuses commented out (entries already commented out stay so)."""
    lines = []
    for line in listing.splitlines():
        entry = TOC_ENTRY.match(line)
        lines.append(f";{line}" if entry and not kept(entry) else line)
    return "\n".join(lines) + "\n"


# The post-data entries that read only their own table's rows: indexes, and the constraints that
# build one (a primary key, unique or exclusion constraint; check constraints are "CHECK CONSTRAINT").
_OWN_INDEX_KINDS = ("INDEX ", "CONSTRAINT ")


def own_index_entries(listing: str) -> dict[tuple[int, int], int]:
    """The dump IDs of the listing's (not commented out) indexes and key constraints, by their
    (catalog OID, object OID)."""
    found = {}
    for line in listing.splitlines():
        if (entry := TOC_ENTRY.match(line)) and entry["rest"].startswith(_OWN_INDEX_KINDS):
            found[(int(entry["catalog"]), int(entry["oid"]))] = int(entry["id"])
    return found


def schema_digest(client: PgClient, archive: Path, listing: str, env: dict[str, str], path: Path) -> str:
    """SHA-256 of the archive's schema as the SQL a restore runs (the listing's entries, large objects
    aside), without the lines that differ between two dumps of the same schema: two dumps whose
    digests are equal hold the same objects, owners, grants and comments."""
    kept = "\n".join(f";{line}" if TOC_ENTRY.match(line) and _LARGE_OBJECT_ENTRY.search(line) else line
                     for line in listing.splitlines()) + "\n"
    list_path = path.with_suffix(".list")
    write_private_text(list_path, kept)
    run_tool([client.program("pg_restore"), "--schema-only", f"--use-list={list_path}", f"--file={path}",
              str(archive)], env)
    script = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines()
                       if line.strip() and not _SCRIPT_NOISE.match(line))
    return hashlib.sha256(script.encode()).hexdigest()


def archive_listing(client: PgClient, archive: Path, env: dict[str, str], listing_path: Path) -> str:
    """``pg_restore --list`` of an archive, kept in ``listing_path`` (a run's evidence) and returned."""
    run_tool([client.program("pg_restore"), "--list", str(archive)], env, stdout_path=listing_path)
    return listing_path.read_text(encoding="utf-8")
