"""Step metadata as the Dagster UI shows it: durations, lists, per-table figures, resource use."""

from __future__ import annotations

import resource
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from wehub_backup.backup.increment import IncrementalCopy, chunk_digest_bytes
from wehub_backup.backup.load import RestoreResult
from wehub_backup.defs.resources import BackupWorkspace
from wehub_backup.pg.dump import DumpResult
from wehub_backup.pg.fingerprint import DatabaseFingerprint
from wehub_backup.run.workdir import directory_bytes
from wehub_backup.units import human_bytes, readable_number

READABLE_SUFFIX = " (readable)"


def readable(metadata: Mapping[str, object]) -> dict[str, object]:
    """The metadata with each large number followed by its readable form.

    The UI prints whole numbers as bare digits; the numbers stay (asset pages plot them, the
    egress budget sums them) and a text entry beside each says ``42.54 MB`` or ``1,234,567``.
    """
    shown: dict[str, object] = {}
    for name, value in metadata.items():
        shown[name] = value
        if (text := readable_number(name, value)) is not None:
            shown[name + READABLE_SUFFIX] = text
    return shown


def seconds(value: float) -> dg.MetadataValue:
    return dg.MetadataValue.float(round(value, 3))


def markdown_list(items: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {item}" for item in items) or "(none)")


def table_summary(fingerprint: DatabaseFingerprint) -> dg.MetadataValue:
    rows = [f"| {name} | {t.rows:,} | {human_bytes(t.size_bytes)} |" for name, t in sorted(fingerprint.tables.items())]
    return dg.MetadataValue.md("| table | rows | size |\n|---|---:|---:|\n" + "\n".join(rows))


def dump_metadata(dump: DumpResult, workspace: BackupWorkspace) -> dict[str, object]:
    """What a dump held and cost, for the dump step of either job. The large tables whose digests a
    stream copy takes as each lands are counted, and their rows in the load step."""
    owed = dump.held.digests_owed if dump.held else frozenset()
    return {
        "artifact_bytes": dump.artifact_bytes,
        "duration_s": seconds(dump.seconds),
        "tables": len(dump.fingerprint.tables) + len(owed),
        "rows": dump.fingerprint.total_rows,  # of the tables digested here
        **({"tables_digested_as_copied": len(owed)} if owed else {}),
        "pg_dump_peak_rss_bytes": dump.pg_dump.peak_rss_bytes,
        "pg_dump_cpu_s": seconds(dump.pg_dump.cpu_seconds),
        "backup_dir_bytes": directory_bytes(Path(workspace.backup_dir)),
        "per_table": table_summary(dump.fingerprint),
    }


def stream_metadata(restored: RestoreResult) -> dict[str, object]:
    """The stream engine's copy: its egress (counted in the budget), rows, bytes, phases, workers, formats."""
    assert restored.stream is not None
    return {
        "egress_bytes": restored.copy_egress_bytes,
        "rows_copied": restored.stream.rows,
        "rows_from_current_copy": restored.stream.rows_from_copy,
        "copy_data_bytes": restored.stream.bytes,
        "copy_workers": restored.stream.workers,
        "copy_ranges": restored.stream.ranges,
        "copy_retries": restored.stream.retries,
        **{f"{phase}_s": seconds(value) for phase, value in restored.phase_seconds.items()},
        "binary_copy_tables": markdown_list(restored.stream.binary_tables),
        "text_copy_tables": markdown_list(restored.stream.text_tables),
    }


def increment_metadata(increment: IncrementalCopy) -> dict[str, object]:
    """What an incremental copy compared and fetched: the chunks, and the tables kept or copied whole."""
    return {
        "chunks_compared": increment.chunks_compared,
        "chunks_copied": increment.chunks_copied,
        "chunk_parts_compared": increment.parts_compared,
        "chunk_parts_copied": increment.parts_copied,
        "tables_unchanged": len(increment.tables_kept),
        "tables_copied_whole": markdown_list(increment.tables_copied_whole),
    }


def chunk_digest_metadata(fingerprint: DatabaseFingerprint) -> dict[str, object]:
    """How many chunk digests the source sent, and about how many bytes they took (part of the dump's egress)."""
    return {"chunk_digests": sum(len(chunks) for chunks in fingerprint.chunks.values()),
            "chunk_digest_bytes": chunk_digest_bytes(fingerprint)}


def settings_text(settings: dict[str, str]) -> str:
    """Session settings the restore needs (money printed in the other side's locale), or "-"."""
    return ", ".join(f"{name}={value}" for name, value in settings.items()) or "-"


def run_process_usage() -> dict[str, dg.MetadataValue | int]:
    """Peak RSS and CPU time of the run's own process; its pg_dump/pg_restore children report theirs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"run_peak_rss_bytes": usage.ru_maxrss * 1024, "run_cpu_s": seconds(usage.ru_utime + usage.ru_stime)}
