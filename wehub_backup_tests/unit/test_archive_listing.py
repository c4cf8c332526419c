"""The archive's table of contents as ``pg_restore --list`` prints it, and what a copy keeps of it (no server)."""

from __future__ import annotations

from wehub_backup.migration.scripts import split_listing
from wehub_backup.pg.toc import entry_schema, left_out_count
from wehub_backup.supabase.scope import CopyScope, filter_archive_listing

SCHEMAS = ["auth", "public", "realtime", "realtime archive", "vault"]
LISTING = """;
; Archive created at 2026-12-01 02:00:01 UTC
;
3; 3079 16390 EXTENSION - pgsodium
4001; 0 0 COMMENT - EXTENSION pgsodium
215; 1259 16385 TABLE public orders postgres
216; 1259 16400 TABLE realtime messages supabase_admin
217; 1259 16410 TABLE realtime archive events postgres
218; 1259 16420 MATERIALIZED VIEW public daily_totals postgres
3456; 0 16385 TABLE DATA public orders postgres
3457; 0 16400 TABLE DATA realtime messages supabase_admin
4100; 0 0 ACL - SCHEMA public pg_database_owner
4101; 0 0 ACL public TABLE orders postgres
"""


def test_entry_schema_reads_past_multi_word_types_and_prefers_the_longest_schema() -> None:
    assert entry_schema("MATERIALIZED VIEW public daily_totals postgres", SCHEMAS) == "public"
    assert entry_schema("TABLE DATA realtime messages supabase_admin", SCHEMAS) == "realtime"
    assert entry_schema("TABLE realtime archive events postgres", SCHEMAS) == "realtime archive"
    assert entry_schema("ACL - SCHEMA public pg_database_owner", SCHEMAS) == "-"


def test_left_out_entries_are_commented_out_and_nothing_else_changes() -> None:
    scope = CopyScope(excluded_schemas=["realtime"], excluded_tables=[], skipped_extension_oids={16390},
                      skipped_extension_names={"pgsodium"}, source_schemas=SCHEMAS)
    filtered = filter_archive_listing(LISTING, scope).splitlines()
    commented = [line[1:] for line in filtered if line.startswith(";") and line[1:2].isdigit()]
    assert commented == [
        "3; 3079 16390 EXTENSION - pgsodium",
        "4001; 0 0 COMMENT - EXTENSION pgsodium",
        "216; 1259 16400 TABLE realtime messages supabase_admin",
        "3457; 0 16400 TABLE DATA realtime messages supabase_admin",
    ]
    assert "217; 1259 16410 TABLE realtime archive events postgres" in filtered
    assert len(filtered) == len(LISTING.splitlines())
    assert left_out_count("\n".join(filtered)) == 4


def test_migration_lists_split_privileges_from_the_rest_and_keep_publics_own_entries_out() -> None:
    main, privileges = split_listing(LISTING, ("public",))
    assert "4101; 0 0 ACL public TABLE orders postgres" in _active(privileges)
    assert "4101; 0 0 ACL public TABLE orders postgres" not in _active(main)
    assert "215; 1259 16385 TABLE public orders postgres" in _active(main)
    assert all("SCHEMA public" not in line for line in _active(main) + _active(privileges))


def _active(listing: str) -> list[str]:
    """The entries pg_restore -L would restore: those not commented out."""
    return [line for line in listing.splitlines() if line[:1].isdigit()]
