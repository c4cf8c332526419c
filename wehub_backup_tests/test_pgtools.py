"""How a failed client program is explained in one line (the run's cause and the alert's)."""

from __future__ import annotations

import pytest

from wehub_backup.pgtools import ToolError, ToolRun

SERVER_ERROR = 'pg_restore: error: could not execute query: ERROR:  relation "vault.decrypted_secrets" does not exist'


def failed_run(*stderr: str) -> ToolRun:
    return ToolRun(["/usr/lib/postgresql/15/bin/pg_restore"], 1, 0.1, 0, 0.0, list(stderr))


@pytest.mark.parametrize("stderr", [
    ("pg_restore: error: a worker process died unexpectedly", SERVER_ERROR, "pg_restore: error: Command was: COPY x"),
    (SERVER_ERROR, "pg_restore: error: a worker process died unexpectedly"),
])
def test_a_parallel_restore_is_explained_by_the_server_not_by_its_leader(stderr: tuple[str, ...]) -> None:
    with pytest.raises(ToolError) as raised:
        failed_run(*stderr).raise_if_failed()
    assert str(raised.value) == 'pg_restore failed: could not execute query: ERROR:  relation "vault.decrypted_secrets" does not exist'


def test_without_server_words_the_first_error_explains() -> None:
    with pytest.raises(ToolError) as raised:
        failed_run("pg_restore: error: could not open input file \"x\": No such file or directory",
                   "pg_restore: error: a worker process died unexpectedly").raise_if_failed()
    assert str(raised.value) == 'pg_restore failed: could not open input file "x": No such file or directory'
