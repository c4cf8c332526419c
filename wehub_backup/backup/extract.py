"""Extract: pg_dump of Supabase from a held snapshot, every byte it sends counted as egress."""

from __future__ import annotations

from wehub_backup.backup.plan import BackupPlan
from wehub_backup.config import child_environment
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.dump import DumpResult, dump_source
from wehub_backup.pg.toc import TOC_ENTRY, archive_listing, schema_digest
from wehub_backup.run.log import Log
from wehub_backup.run.workdir import RunDirectory
from wehub_backup.supabase.scope import filter_archive_listing


def extract_supabase(plan: BackupPlan, supabase: ConnectionInfo, log: Log, *, low_priority: bool = True) -> DumpResult:
    """pg_dump of Supabase with all its traffic through the byte-counting relay.

    The egress figure is what crossed the wire; a dump that fails still reports what it had
    received by then (``DumpFailed.egress_bytes``), as the budget must count it, and a dump
    killed outright leaves the figure in the working directory for the next run to record.
    With the stream engine the snapshot stays held for the load step, and is kept under the
    run's working directory: the run's end closes it if the load does not.
    """
    dump = dump_source(plan.dump_request(), supabase, log, low_priority=low_priority, progress_dir=plan.workdir)
    if dump.held is not None:
        RunDirectory.keep_open(plan.workdir, dump.held)
    describe_schema(plan, dump)
    return dump


def describe_schema(plan: BackupPlan, dump: DumpResult) -> None:
    """The archive's entries the copy restores (the load step's restore list), the digest of the
    schema they make, and whether they carry any table's rows: recorded with the copy, the digest
    and the rows tell the next incremental run whether its staging can be a file copy of this one
    (``stage.in_place_refusal``)."""
    env = child_environment()
    listing = filter_archive_listing(archive_listing(plan.client, dump.archive, env, plan.workdir / "archive.listing"),
                                     plan.scope)
    dump.restore_listing = listing
    dump.schema_digest = schema_digest(plan.client, dump.archive, listing, env, plan.workdir / "schema.sql")
    dump.archive_rows = any(entry["rest"].startswith("TABLE DATA ")
                            for entry in map(TOC_ENTRY.match, listing.splitlines()) if entry)
