"""Restore into Supabase: the scripts in one psql transaction, through the byte-counting relay."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from wehub_backup.errors import ToolError
from wehub_backup.migration import managed_tables
from wehub_backup.migration.plan import MigrationPlan
from wehub_backup.migration.scripts import write_restore_scripts
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.digests import TableFingerprint
from wehub_backup.pg.dump import DumpResult
from wehub_backup.pg.processes import ToolRun, run_tool
from wehub_backup.pg.relay import counted_connection
from wehub_backup.run.log import Log


@dataclass
class MigrationRestore:
    seconds: float
    bytes_sent: int
    psql: ToolRun
    rewritten_references: int
    privileges_left_out: list[str]
    carried_rows: dict[str, TableFingerprint] = field(default_factory=dict)  # in the VPS copy, by table


def restore_in_one_transaction(plan: MigrationPlan, dump: DumpResult, source: ConnectionInfo,
                               target: ConnectionInfo, log: Log, *, low_priority: bool = True) -> MigrationRestore:
    """Empty the app schemas and restore them in one psql transaction, through the byte-counting relay.

    ``ON_ERROR_STOP`` makes the first error end psql, which rolls the transaction back: no
    error is ever 'ignored', and Supabase is either unchanged or fully migrated. Rows carried
    into Supabase's own tables (buckets, users) are read from ``source`` here.
    """
    started = time.monotonic()
    scripts, rewritten, privileges_left_out = write_restore_scripts(plan, dump)
    carried: dict[str, TableFingerprint] = {}
    if plan.carried_tables:
        rows_script = plan.workdir / "carried-rows.sql"
        carried = managed_tables.write_rows_script(source, plan.carried_tables, rows_script, plan.hold_triggers)
        scripts.insert(scripts.index(plan.workdir / "data.sql") + 1, rows_script)
    for line in privileges_left_out:
        log(f"left out (role missing on Supabase or not ours to use): {line}")
    argv = [plan.client.program("psql"), "--no-psqlrc", "--single-transaction", "--set=ON_ERROR_STOP=1",
            "--quiet", "--no-password", *(f"--file={script}" for script in scripts)]
    with counted_connection(target) as (relayed, counters), \
            relayed.tool_environment(plan.secrets_dir / "target.pgpass") as env:
        try:
            run = run_tool(argv, env, on_line=_server_messages(log), log=log, low_priority=low_priority)
        except ToolError as error:
            rolled_back = "ERROR:" in str(error)
            raise ToolError(f"{error}" + ("; the transaction was rolled back, Supabase is unchanged"
                                          if rolled_back else "")) from None
        sent = counters.sent_to_server
    return MigrationRestore(time.monotonic() - started, sent, run, rewritten, privileges_left_out, carried)


def _server_messages(log: Log) -> Callable[[str], None]:
    """Pass on what the server said (warnings such as 'no privileges were granted', and errors)."""

    def forward(line: str) -> None:
        if "WARNING:" in line or "ERROR:" in line:
            log(line)

    return forward
