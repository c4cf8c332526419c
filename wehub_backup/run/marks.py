"""The mark that says a VPS database is a copy this project made, and of which source.

A backup replaces its target and drops older generations, so it must know which databases
are its own: a target name that happens to be an unrelated database (``crm``) must be
refused, not renamed away and dropped a week later. The mark is the database's comment
(``COMMENT ON DATABASE``), because the comment

- is stored by the database's OID, so it travels with every rename (staging -> target ->
  ``__previous``) and changes in the same transaction as the renames;
- can be changed only by the database's owner or a superuser, which the application's login is
  not (the project creates its copies as the VPS superuser);
- is written by ``pg_dump`` only with ``--create``, so a dump of a copy (the migration back to
  Supabase dumps its schemas) does not carry it anywhere.

A table inside the copy would be dumped and migrated with the application's data; a
database-level setting would be applied to every session the application opens.

Before a backup renames or drops anything it checks the marks (``check_replaceable``); an
operator who wants a database without the mark replaced says so explicitly (``--adopt``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from wehub_backup.errors import ForeignDatabase
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.databases import drop_database
from wehub_backup.run.targets import generation_names

MARK_PREFIX = "wehub_backup: "
ADOPT_HINT = "adopt_existing_target: true, or wehub-backup backup --adopt {target}"


class MarkState(enum.StrEnum):
    """What the project knows of a database it marked; the words are part of the comment."""

    UNVERIFIED = "unverified copy of"  # staging, from its creation until the swap
    VERIFIED = "verified copy of"  # set in the swap transaction, as staging becomes the target
    ADOPTED = "adopted, replaced by a copy of"  # a database an operator handed over explicitly


@dataclass(frozen=True)
class Mark:
    state: MarkState
    source: str

    def text(self) -> str:
        return f"{MARK_PREFIX}{self.state} {self.source}"

    @classmethod
    def parse(cls, comment: str | None) -> Mark | None:
        """The mark in a database comment, or None for any comment the project did not write."""
        if not comment or not comment.startswith(MARK_PREFIX):
            return None
        rest = comment.removeprefix(MARK_PREFIX)
        for state in MarkState:
            source = rest.removeprefix(f"{state} ")
            if source != rest and source:
                return cls(state, source)
        return None


def source_identity(source: ConnectionInfo) -> str:
    """The source a copy is of: login, host and database, as configured.

    The port is left out: Supabase's direct host and its session pooler both use 5432, and a
    local relay or tunnel in front of the same database would change it. The login stays in,
    because behind the pooler it is what names the project (``postgres.<ref>``).
    """
    return f"{source.user}@{source.host}/{source.dbname}"


def read_marks(conn: psycopg.Connection, names: Iterable[str]) -> dict[str, Mark | None]:
    """The mark of each of ``names`` that exists (None where it carries none)."""
    rows = conn.execute("SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
                        " WHERE datname = ANY(%s)", (list(names),))
    return {name: Mark.parse(comment) for name, comment in rows}


def write_mark(conn: psycopg.Connection, database: str, mark: Mark) -> None:
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(database), sql.Literal(mark.text())))


def drop_if_marked(conn: psycopg.Connection, name: str) -> bool:
    """Drop ``name`` only if it carries the project's mark: cleanup never takes a stranger."""
    return read_marks(conn, [name]).get(name) is not None and drop_database(conn, name)


def check_replaceable(conn: psycopg.Connection, target: str, source: str, adopt: bool) -> list[str]:
    """Refuse, before anything changes, to replace or drop a database that is not the project's.

    The target must be a copy of ``source``; staging, ``__previous`` and ``__retired`` must
    carry any mark of the project. With ``adopt`` whatever is there is accepted: the
    databases taken over that way are returned.
    """
    marks = read_marks(conn, generation_names(target))
    foreign = [(name, why) for name in generation_names(target)
               if name in marks and (why := _foreign_reason(name, marks[name], target, source))]
    if foreign and not adopt:
        name, why = foreign[0]
        others = f" (also {', '.join(other for other, _ in foreign[1:])})" if len(foreign) > 1 else ""
        raise ForeignDatabase(f"VPS database {name} {why}{others}; this run changed nothing (to let backups replace "
                              f"it, run once with {ADOPT_HINT.format(target=target)}; or choose another target)")
    return [name for name, _ in foreign]


def _foreign_reason(name: str, mark: Mark | None, target: str, source: str) -> str:
    """Why the backup may not replace ``name`` (empty if it may)."""
    if mark is None:
        return "was not made by wehub_backup (it carries no wehub_backup mark in its comment)"
    if name == target and mark.source != source:
        return f"is a copy of {mark.source}, not of this run's source {source}"
    return ""
