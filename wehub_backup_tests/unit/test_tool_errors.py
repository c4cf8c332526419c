"""Which line of a client program's stderr explains its failure (no server)."""

from __future__ import annotations

import os
import shlex

import pytest

from wehub_backup.errors import ToolError
from wehub_backup.pg.processes import run_tool

SERVER_ERROR = 'pg_restore: error: could not execute query: ERROR:  relation "vault.decrypted_secrets" does not exist'
LEADER_ERROR = "pg_restore: error: a worker process died unexpectedly"
PROGRESS = tuple(f"pg_restore: finished item {i} TABLE DATA t{i}" for i in range(100))


def failure_of(*stderr: str) -> str:
    """Run a real process that writes ``stderr`` line by line and exits 1; the one-line cause."""
    script = "".join(f"echo {shlex.quote(line)} >&2; " for line in stderr) + "exit 1"
    with pytest.raises(ToolError) as raised:
        run_tool(["/bin/sh", "-c", script], dict(os.environ))
    return str(raised.value)


@pytest.mark.parametrize("stderr", [
    (LEADER_ERROR, SERVER_ERROR, "pg_restore: error: Command was: COPY x"),
    (SERVER_ERROR, LEADER_ERROR),
    (SERVER_ERROR, *PROGRESS, LEADER_ERROR),
])
def test_a_parallel_restore_is_explained_by_the_server_not_by_its_leader(stderr: tuple[str, ...]) -> None:
    assert failure_of(*stderr) == 'sh failed: could not execute query: ERROR:  relation "vault.decrypted_secrets" does not exist'


def test_without_server_words_the_first_error_explains() -> None:
    cause = failure_of('pg_restore: error: could not open input file "x": No such file or directory', LEADER_ERROR)
    assert cause == 'sh failed: could not open input file "x": No such file or directory'


def test_without_any_error_line_the_last_line_explains() -> None:
    assert failure_of("pg_restore: connecting to database", "Killed") == "sh failed: Killed"
