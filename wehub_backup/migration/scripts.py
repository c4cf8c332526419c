"""The scripts psql runs in the migration's one transaction, written from the archive."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from psycopg import sql

from wehub_backup.config import child_environment
from wehub_backup.files import write_private_text
from wehub_backup.migration.checks import RECREATED_KINDS, CatalogCopy, Relocation
from wehub_backup.migration.plan import MigrationPlan
from wehub_backup.migration.queries import KEPT_SCHEMAS, app_scope, read_query
from wehub_backup.pg.clients import settings_unknown_to
from wehub_backup.pg.connection import session_timeouts
from wehub_backup.pg.dump import DumpResult
from wehub_backup.pg.names import OPERATOR_CHARS, name_forms, quote_pattern
from wehub_backup.pg.processes import run_tool
from wehub_backup.pg.toc import TOC_ENTRY, archive_listing

# A DROP waiting this long for the application's locks gives up (and rolls everything back).
LOCK_TIMEOUT_S = 60
_ROLE = r'(?P<role>PUBLIC|"(?:[^"]|"")+"|[^\s";]+)'
_GRANTEE = re.compile(r" (?:TO|FROM) " + _ROLE + r"(?: WITH GRANT OPTION)?;$")
_DEFAULT_PRIVILEGES_OWNER = re.compile(r'^ALTER DEFAULT PRIVILEGES FOR ROLE (?P<role>"(?:[^"]|"")+"|[^\s";]+) ')
_SESSION_AUTHORIZATION = re.compile(r"^(?:SET|RESET) SESSION AUTHORIZATION\b")
_TOC_HEADER = re.compile(r"^--\n-- TOC entry \d+ \(class (?P<catalog>\d+) OID (?P<oid>\d+)\)$", re.M)


def write_restore_scripts(plan: MigrationPlan, dump: DumpResult) -> tuple[list[Path], int, list[str]]:
    """The scripts psql runs, in order; with the count of rewritten references and the privileges left out.

    pg_restore writes the schema before and after the data, and the privileges, as SQL.
    Only the schema and privilege scripts are rewritten; the data script is never touched
    beyond its header.
    """
    workdir = plan.workdir
    listing_path = workdir / "archive.listing"
    env = child_environment()
    restore = [plan.client.program("pg_restore"), "--no-owner", "--no-tablespaces", "--no-security-labels"]
    listing = archive_listing(plan.client, dump.archive, env, listing_path)
    main_list, privileges_list = split_listing(listing, KEPT_SCHEMAS)
    write_private_text(workdir / "main.list", main_list)
    write_private_text(workdir / "privileges.list", privileges_list)
    parts = {
        "pre-data.sql": ["--section=pre-data", f"--use-list={workdir / 'main.list'}", "--verbose"],
        "data.sql": ["--section=data", f"--use-list={workdir / 'main.list'}"],
        "post-data.sql": ["--section=post-data", f"--use-list={workdir / 'main.list'}"],
        "privileges.sql": [f"--use-list={workdir / 'privileges.list'}"],
    }
    for name, args in parts.items():
        run_tool([*restore, *args, f"--file={workdir / name}", str(dump.archive)], env)
        drop_unknown_settings(workdir / name, plan.target_server.major)
    if plan.casts:
        _write(workdir / "pre-data.sql", insert_casts(_read(workdir / "pre-data.sql"), plan.casts))
    if plan.publications:
        _write(workdir / "publications.sql", "\n".join(p.statements for p in plan.publications) + "\n")
    rewrite = relocation_rewriter(plan.relocations)
    rewritten = sum(_rewrite_file(workdir / name, rewrite) for name in ("pre-data.sql", "post-data.sql",
                                                                        "publications.sql") if (workdir / name).exists())
    privileges, left_out = filter_privileges(_read(workdir / "privileges.sql"), plan.target_roles, plan.member_roles)
    privileges, count = rewrite(privileges)
    _write(workdir / "privileges.sql", privileges)
    scripts = [_write(workdir / "prelude.sql", prelude_sql(plan)), workdir / "pre-data.sql", workdir / "data.sql",
               workdir / "post-data.sql", _write(workdir / "reset.sql", reset_privileges_sql(plan)),
               workdir / "privileges.sql"]
    if plan.recreated:
        scripts.append(_write(workdir / "outside.sql", "\n".join(r.statements for r in plan.recreated) + "\n"))
    if plan.publications:
        scripts.append(workdir / "publications.sql")
    return scripts, rewritten + count, left_out


def insert_casts(script: str, casts: list[CatalogCopy]) -> str:
    """The pre-data script with each cast inserted after the last archive entry it needs.

    There it comes after its function and types and before any view or default that may
    use it, as pg_dump orders a cast. ``pg_restore --verbose`` heads each entry with
    ``-- TOC entry N (class C OID O)``; a cast none of whose entries is there comes first.
    """
    starts = {(int(m["catalog"]), int(m["oid"])): m.start() for m in _TOC_HEADER.finditer(script)}
    ends = sorted(starts.values()) + [len(script)]
    inserts: dict[int, list[str]] = {}
    for cast in casts:
        anchor = max((starts[entry] for entry in cast.after if entry in starts), default=-1)
        at = next(end for end in ends if end > anchor) if anchor >= 0 else _first_entry(script)
        inserts.setdefault(at, []).append(cast.statements)
    pieces, done = [], 0
    for at in sorted(inserts):
        pieces += [script[done:at], "\n".join(inserts[at]) + "\n\n"]
        done = at
    return "".join(pieces) + script[done:]


def _first_entry(script: str) -> int:
    first = _TOC_HEADER.search(script)
    return first.start() if first else len(script)


def split_listing(listing: str, kept_schemas: tuple[str, ...]) -> tuple[str, str]:
    """Two restore lists from pg_restore's listing: everything but privileges, and privileges only.

    A kept schema's own entries (its CREATE SCHEMA, owner, grants and comment) are in neither:
    Supabase's definition of ``public`` stays.
    """
    kept_prefixes = tuple(f"{desc} {form} " for schema in kept_schemas for form in name_forms(schema)
                          for desc in ("SCHEMA -", "COMMENT - SCHEMA", "ACL - SCHEMA"))
    main, privileges = [], []
    for line in listing.splitlines():
        match = TOC_ENTRY.match(line)
        if not match:
            main.append(line)
            privileges.append(line)
            continue
        rest = match["rest"]
        is_kept_schema = rest.startswith(kept_prefixes)
        is_privilege = rest.startswith(("ACL ", "DEFAULT ACL "))
        main.append(line if not (is_kept_schema or is_privilege) else ";" + line)
        privileges.append(line if is_privilege and not is_kept_schema else ";" + line)
    return "\n".join(main) + "\n", "\n".join(privileges) + "\n"


def drop_unknown_settings(script: Path, server_major: int) -> None:
    """Comment out header settings the target server is too old for, in place (the data script can be large).

    ``SET transaction_timeout`` from pg_restore 17 fails on PostgreSQL 15; its three bytes
    ``SET`` become ``-- `` so nothing else of the file moves. The scripts are complete files
    rather than a pipe into psql: a pipe cut short ends a ``COPY`` early without an error,
    and psql would then go on to commit a partial table.
    """
    with open(script, "r+b") as handle:
        head = handle.read(8192)
        for setting in settings_unknown_to(server_major):
            at = head.find(b"\nSET " + setting + b" ")
            if at >= 0:
                handle.seek(at + 1)
                handle.write(b"-- ")


def relocation_rewriter(relocations: list[Relocation]) -> Callable[[str], tuple[str, int]]:
    """A function that rewrites ``public.uuid_generate_v4`` to ``"extensions".uuid_generate_v4`` and the like."""
    rules = []
    for relocation in relocations:
        if not relocation.members:
            continue
        names = sorted({re.escape(form) for member in relocation.members for form in name_forms(member)},
                       key=len, reverse=True)
        schemas = "|".join(re.escape(form) for form in name_forms(relocation.source_schema))
        pattern = re.compile(rf'(?<![\w$."])(?:{schemas})\.(?=(?:{"|".join(names)})(?![\w${OPERATOR_CHARS}]))')
        rules.append((pattern, quote_pattern(relocation.target_schema) + "."))

    def rewrite(text: str) -> tuple[str, int]:
        total = 0
        for pattern, replacement in rules:
            text, count = pattern.subn(replacement, text)
            total += count
        return text, total

    return rewrite


def filter_privileges(script: str, target_roles: frozenset[str], member_roles: frozenset[str]) -> tuple[str, list[str]]:
    """Keep the GRANT/REVOKE lines Supabase can run; return the script and the lines left out.

    A grant to a role Supabase lacks would fail; default privileges of a role the login is
    not a member of cannot be set. Grants made by another grantor run as the login (who owns
    every migrated object), so the ``SET SESSION AUTHORIZATION`` around them goes.
    """
    kept, left_out = [], []
    for line in script.splitlines(keepends=True):
        statement = line.rstrip("\n")
        if _SESSION_AUTHORIZATION.match(statement):
            continue
        owner = _DEFAULT_PRIVILEGES_OWNER.match(statement)
        grantee = _GRANTEE.search(statement) if statement.startswith(("GRANT ", "REVOKE ", "ALTER DEFAULT ")) else None
        if (owner and _unquote(owner["role"]) not in member_roles) or (
                grantee and grantee["role"] != "PUBLIC" and _unquote(grantee["role"]) not in target_roles):
            left_out.append(statement)
            continue
        kept.append(line)
    return "".join(kept), left_out


def prelude_sql(plan: MigrationPlan) -> str:
    """The transaction's first statements: re-check the preflight's findings, then empty the app schemas.

    The checks repeat inside the transaction, so a change on Supabase since the preflight
    (a new trigger on auth.users, a table in an empty schema) aborts instead of being lost.
    """
    scope = {**app_scope(plan.existing_schemas), "expected": sql.Literal(plan.outside_oids),
             "recreated": sql.Literal(list(RECREATED_KINDS))}
    outside = sql.SQL(read_query("outside_dependents")).format(**scope)
    objects = sql.SQL(read_query("schema_objects")).format(**scope)
    statements = [
        # the login's timeouts cleared in the transaction itself (PostgreSQL 17's transaction_timeout too)
        *(sql.SQL(statement)  # type: ignore[arg-type]
          for statement in session_timeouts(plan.target_server.version_num, LOCK_TIMEOUT_S)),
        sql.SQL("SET client_min_messages = warning"), sql.SQL("SELECT pg_catalog.set_config('search_path', '', false)"),
        *(sql.SQL("SELECT pg_catalog.set_config({}, {}, false)").format(sql.Literal(name), sql.Literal(value))
          for name, value in plan.restore_settings.items()),
        sql.SQL("""DO $wehub$ DECLARE blocker text; BEGIN
  SELECT q.dependent || ' depends on ' || q.referenced INTO blocker FROM ({outside}) q
    WHERE q.kind = 'other' OR (q.kind = ANY({recreated}::text[]) AND NOT q.objid::bigint = ANY({expected}::bigint[]))
    LIMIT 1;
  IF blocker IS NOT NULL THEN
    RAISE EXCEPTION 'Supabase changed since the preflight: % (nothing was changed; run the migration again)', blocker;
  END IF;
END $wehub$""").format(outside=outside, **scope),
    ]
    if not plan.overwrite:
        statements.append(sql.SQL("""DO $wehub$ DECLARE found text; BEGIN
  SELECT o.type || ' ' || o.identity INTO found FROM ({objects}) o LIMIT 1;
  IF found IS NOT NULL THEN
    RAISE EXCEPTION '% appeared on Supabase since the preflight; nothing was changed (overwrite is off)', found;
  END IF;
END $wehub$""").format(objects=objects))
    statements += [sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(s)) for s in plan.dropped_schemas]
    return ";\n".join(s.as_string() for s in statements) + ";\n" + empty_schemas_sql(
        [s for s in plan.existing_schemas if s in KEPT_SCHEMAS])


def empty_schemas_sql(schemas: list[str]) -> str:
    """Drop every object of the schemas except extension members, keeping the schemas themselves."""
    return sql.SQL("""DO $wehub$ DECLARE statement text; BEGIN
  FOREACH statement IN ARRAY ARRAY(
    SELECT format('DROP %s IF EXISTS %s CASCADE',
                  CASE o.type WHEN 'statistics object' THEN 'STATISTICS' ELSE upper(o.type) END, o.identity)
      FROM ({objects}) o)
  LOOP EXECUTE statement; END LOOP;
END $wehub$;
""").format(objects=sql.SQL(read_query("schema_objects")).format(schemas=sql.Literal(schemas))).as_string()


_RESET_PRIVILEGES = read_query("reset_privileges")


def reset_privileges_sql(plan: MigrationPlan) -> str:
    """Undo what Supabase's default privileges granted to the objects just created.

    Supabase grants every new table in ``public`` to anon and authenticated by default; a
    VPS table that was never granted to them must not become readable through the API.
    The VPS privileges are applied next, so each object ends with exactly its VPS grants.
    """
    return "SELECT pg_catalog.set_config('search_path', '', false);\n" + sql.SQL(_RESET_PRIVILEGES).format(
        **app_scope(plan.app_schemas)).as_string()


def _unquote(role: str) -> str:
    return role[1:-1].replace('""', '"') if role.startswith('"') else role


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="surrogateescape")


def _write(path: Path, text: str) -> Path:
    return write_private_text(path, text, errors="surrogateescape")


def _rewrite_file(path: Path, rewrite: Callable[[str], tuple[str, int]]) -> int:
    text, count = rewrite(_read(path))
    _write(path, text)
    return count
