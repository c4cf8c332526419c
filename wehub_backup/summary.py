"""A run's outcome in words: what the command line prints and the demo shows."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

from wehub_backup.alerts.classify import EXCEPTION_CLASS_PREFIX, classify_failure, scrub_secrets
from wehub_backup.alerts.messages import run_url
from wehub_backup.defs.failures import run_failure_of
from wehub_backup.units import readable_number


@dataclass
class RunSummary:
    run_id: str
    job_name: str
    success: bool
    failed_step: str | None = None
    failure: str | None = None
    failure_kind: str | None = None
    step_metadata: dict[str, dict[str, object]] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)
    started_at: datetime | None = None

    def value(self, step: str, key: str, default: object = None) -> object:
        return self.step_metadata.get(step, {}).get(key, default)


def summarize_run(instance: dg.DagsterInstance, run_id: str) -> RunSummary:
    """Read a finished run's outcome, metadata and step durations back from the instance."""
    run = instance.get_run_by_id(run_id)
    assert run is not None, f"run {run_id} not found"
    summary = RunSummary(run_id, run.job_name, run.status == dg.DagsterRunStatus.SUCCESS)
    started: dict[str, float] = {}
    for record in instance.all_logs(run_id):
        if summary.started_at is None:
            summary.started_at = datetime.fromtimestamp(record.timestamp, UTC)
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            summary.step_seconds[event.step_key] = record.timestamp - started.get(event.step_key, record.timestamp)
        if event.event_type == dg.DagsterEventType.STEP_OUTPUT:
            summary.step_metadata[event.step_key] = {k: v.value for k, v in event.step_output_data.metadata.items()}
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE and summary.failed_step is None:
            summary.failed_step = event.step_key
            summary.failure = scrub_secrets(failure_reason(event.step_failure_data.error))
            failure = run_failure_of(event.step_key, event.step_failure_data.error)
            summary.failure_kind = classify_failure(failure.error_text, failure.error_classes).category
    return summary


_EXCEPTION_PREFIX = re.compile(r"^" + EXCEPTION_CLASS_PREFIX + " ")


def failure_reason(error: object) -> str:
    """The user-facing cause, unwrapped from Dagster's 'Error occurred while executing op' wrapper."""
    while getattr(error, "cause", None) is not None and "while executing op" in getattr(error, "message", ""):
        error = error.cause  # type: ignore[attr-defined]
    message = getattr(error, "message", str(error)).strip()
    first = message.splitlines()[0] if message else "unknown error"
    return _EXCEPTION_PREFIX.sub("", first, count=1)


def format_summary(summary: RunSummary, ui_url: str) -> str:
    """Plain text for a terminal: outcome, sizes, rows, and where to look in the UI."""
    lines = [f"{summary.job_name}: {_outcome(summary)} (run {summary.run_id})"]
    if summary.started_at is not None:
        lines.append(f"  started: {summary.started_at:%Y-%m-%d %H:%M:%S %Z}")
    lines += [f"  {label}: {value}" for label, value in _figures(summary)]
    for step, seconds in summary.step_seconds.items():
        lines.append(f"  {step}: {seconds:.1f}s")
    lines.append(f"  details: {run_url(ui_url, summary.run_id)}")
    return "\n".join(lines)


def headline(summary: RunSummary) -> str:
    """The summary in one line, for the run's tag in the Runs list."""
    figures = [f"{label}: {value}" for label, value in _figures(summary) if label in _HEADLINE_LABELS]
    return "; ".join([_outcome(summary), *figures])


def _outcome(summary: RunSummary) -> str:
    return "SUCCESS" if summary.success else "FAILURE"


def _figures(summary: RunSummary) -> list[tuple[str, str]]:
    figures = []
    if not summary.success:
        figures += [("failed step", str(summary.failed_step)), ("cause", str(summary.failure)),
                    ("kind", str(summary.failure_kind))]
    for label, step, key in _SUMMARY_FIELDS:
        value = summary.value(step, key)
        if value is not None:
            figures.append((label, _human(key, value)))
    return figures


_HEADLINE_LABELS = frozenset({"failed step", "cause", "target", "rows verified", "received from Supabase",
                              "sent to Supabase"})


_SUMMARY_FIELDS = (
    ("target", "plan_supabase_backup", "target"),
    ("source server", "plan_supabase_backup", "source_server_version"),
    ("pg_dump", "plan_supabase_backup", "pg_dump"),
    ("tables verified", "verify_restored_database", "tables_verified"),
    ("rows verified", "verify_restored_database", "rows_verified"),
    ("received from Supabase", "dump_supabase_database", "egress_bytes"),
    ("received from Supabase by the copy", "restore_into_staging_database", "egress_bytes"),
    ("dump size", "dump_supabase_database", "artifact_bytes"),
    ("previous copy", "promote_staging_database", "previous_kept_as"),
    ("source database", "plan_vps_migration", "source_database"),
    ("Supabase server", "plan_vps_migration", "supabase_server_version"),
    ("pg_dump", "plan_vps_migration", "pg_dump"),
    ("tables verified", "verify_supabase_copy", "tables_verified"),
    ("rows verified", "verify_supabase_copy", "rows_verified"),
    ("sent to Supabase", "restore_into_supabase", "bytes_sent_to_supabase"),
    ("rows carried into Supabase's own tables", "verify_supabase_copy", "rows_carried_verified"),
    ("left out", "plan_vps_migration", "left_out"),
)


def _human(key: str, value: object) -> str:
    if key == "left_out" and isinstance(value, str) and value.startswith("- "):
        return "".join(f"\n    {line}" for line in value.splitlines())  # one item a line, under the label
    return readable_number(key, value) or str(value)
