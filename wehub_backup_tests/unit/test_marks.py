"""Copy marks: what a database comment says about who made the database, and of which source (no server)."""

from __future__ import annotations

import pytest

from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.run.marks import Mark, MarkState, source_identity


@pytest.mark.parametrize("state", list(MarkState))
def test_every_mark_reads_back_as_written(state: MarkState) -> None:
    mark = Mark(state, "postgres.abcd@aws-0-eu-central-1.pooler.supabase.com/postgres")
    assert Mark.parse(mark.text()) == mark


@pytest.mark.parametrize("comment", [
    None, "", "production CRM", "wehub_backup", "wehub_backup: ", "wehub_backup: verified copy of",
    "wehub_backup: verified copy of ", "wehub_backup: restored by hand from a copy of x",
    "made by wehub_backup: verified copy of x",
])
def test_a_comment_the_project_did_not_write_is_no_mark(comment: str | None) -> None:
    assert Mark.parse(comment) is None


def test_the_source_is_named_by_login_host_and_database_not_port() -> None:
    direct = ConnectionInfo("db.abcd.supabase.co", 5432, "postgres", "postgres", "require", None)  # type: ignore[arg-type]
    relayed = direct.via_relay(40123)
    assert source_identity(direct) == source_identity(relayed) == "postgres@db.abcd.supabase.co/postgres"
