"""Extract: pg_dump of Supabase from a held snapshot, every byte it sends counted as egress."""

from __future__ import annotations

from wehub_backup.backup.plan import BackupPlan
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.dump import DumpResult, dump_source
from wehub_backup.pg.processes import Log


def extract_supabase(plan: BackupPlan, supabase: ConnectionInfo, log: Log, *, low_priority: bool = True) -> DumpResult:
    """pg_dump of Supabase with all its traffic through the byte-counting relay.

    The egress figure is what crossed the wire; a dump that fails still reports what it had
    received by then (``DumpFailed.egress_bytes``), as the budget must count it, and a dump
    killed outright leaves the figure in the working directory for the next run to record.
    """
    return dump_source(plan.dump_request(), supabase, log, low_priority=low_priority, progress_dir=plan.workdir)
