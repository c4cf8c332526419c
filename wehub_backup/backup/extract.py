"""Extract: pg_dump of Supabase from a held snapshot, every byte it sends counted as egress."""

from __future__ import annotations

from dataclasses import replace

from wehub_backup.backup.plan import BackupPlan
from wehub_backup.errors import DumpFailed
from wehub_backup.pg.connection import ConnectionInfo, error_line
from wehub_backup.pg.dump import DumpResult, dump_source
from wehub_backup.pg.processes import Log
from wehub_backup.pg.relay import counted_connection


def extract_supabase(plan: BackupPlan, supabase: ConnectionInfo, log: Log, *, low_priority: bool = True) -> DumpResult:
    """pg_dump of Supabase with all its traffic through the byte-counting relay.

    The egress figure is what crossed the wire; a dump that fails still reports what it had
    received by then (``DumpFailed.egress_bytes``), as the budget must count it, and a dump
    killed outright leaves the figure in the working directory for the next run to record.
    """
    with counted_connection(supabase, plan.workdir) as (relayed, counters):
        try:
            dump = dump_source(plan.dump_request(), relayed, log, low_priority=low_priority)
        except Exception as error:
            raise DumpFailed(error_line(error), counters.received_from_server) from error
        return replace(dump, egress_bytes=counters.received_from_server)
