"""Supabase egress: how much of the billing cycle's transfer budget the backups have used.

The free tier allows 5 GB of egress per billing cycle, and a logical dump sends every row over
the wire. Every dump records the bytes Supabase sent as ``egress_bytes`` in its step output
metadata, whether the run then succeeds or not: a dump that fails after streaming the data was
paid for all the same. A dump killed outright records nothing itself: the next run reads what the
relay had counted from the dead run's working directory and records it on the dead run as an
engine event. The cycle's total is summed from those records in the Dagster instance, so it
matches what the UI shows.
"""

from __future__ import annotations

import calendar
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.events import EngineEventData

from wehub_backup.alerts.delivery import AlertChannels, deliver_alert, none_delivered
from wehub_backup.alerts.messages import Alert
from wehub_backup.config import BUDGET_ENV, EgressSettings
from wehub_backup.defs.assets import EGRESS_ASSET_KEY
from wehub_backup.defs.metadata import readable
from wehub_backup.defs.names import MODE_TAG
from wehub_backup.errors import EgressBudgetError
from wehub_backup.units import human_bytes

WARNING_SHARE = 0.8
EGRESS_METADATA_KEY = "egress_bytes"
FORCE_FIELD = "force_over_budget"
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class BillingCycle:
    """One billing period, [start, end) in UTC."""

    start: datetime
    end: datetime

    @classmethod
    def containing(cls, moment: datetime, cycle_day: int = 1) -> BillingCycle:
        """The cycle ``moment`` falls in; a cycle day past a month's end starts on its last day."""
        moment = moment.astimezone(UTC)
        start = _cycle_start(moment.year, moment.month, cycle_day)
        if start > moment:
            start = _cycle_start(*_shift_month(moment.year, moment.month, -1), cycle_day)
        return cls(start, _cycle_start(*_shift_month(start.year, start.month, 1), cycle_day))

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def describe(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"


def _cycle_start(year: int, month: int, cycle_day: int) -> datetime:
    return datetime(year, month, min(cycle_day, calendar.monthrange(year, month)[1]), tzinfo=UTC)


def _shift_month(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + months
    return index // 12, index % 12 + 1


@dataclass(frozen=True)
class RunEgress:
    """Egress one run's dump recorded, and when."""

    run_id: str
    status: dg.DagsterRunStatus
    egress_bytes: int
    measured_at: datetime
    mode: str = "full"  # a backup run's mode (runs of other jobs and untagged runs count as full)


@dataclass(frozen=True)
class EgressUsage:
    """The cycle's egress so far against the budget."""

    cycle: BillingCycle
    now: datetime
    budget_bytes: int
    runs: tuple[RunEgress, ...]

    @property
    def used_bytes(self) -> int:
        return sum(run.egress_bytes for run in self.runs)

    @property
    def used_share(self) -> float:
        return self.used_bytes / self.budget_bytes

    @property
    def projected_bytes(self) -> int:
        """Egress by the cycle's end if it keeps accruing at its average rate so far (linear)."""
        elapsed = (self.now - self.cycle.start).total_seconds()
        if elapsed <= 0:
            return self.used_bytes
        return round(self.used_bytes * self.cycle.length.total_seconds() / elapsed)

    @property
    def run_count(self) -> int:
        """Runs, not measurements: a stream engine run records its dump's egress and its copy's."""
        return len({run.run_id for run in self.runs})

    def runs_by_status(self) -> Counter[str]:
        return Counter(run.status.value.lower() for run in {run.run_id: run for run in self.runs}.values())

    def by_mode(self) -> str:
        """Runs and egress per backup mode, e.g. ``1 full (412.00 MB), 6 incremental (9.10 MB)``."""
        runs: dict[str, set[str]] = {}
        sizes: Counter[str] = Counter()
        for run in self.runs:
            runs.setdefault(run.mode, set()).add(run.run_id)
            sizes[run.mode] += run.egress_bytes
        return ", ".join(f"{len(ids)} {mode} ({human_bytes(sizes[mode])})" for mode, ids in sorted(runs.items()))


def recorded_egress(instance: dg.DagsterInstance, run_id: str) -> list[tuple[int, datetime]]:
    """(bytes, when) of every step of the run that reports Supabase egress.

    A dump that failed partway reports what it had received in its failure: a retried
    dump costs egress again, and the budget has to see it. A killed run's figure comes
    in an engine event, written by the run that found it.
    """
    found = []
    reporting = {dg.DagsterEventType.STEP_OUTPUT, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.ENGINE_EVENT}
    for record in instance.get_records_for_run(run_id, of_type=reporting).records:
        metadata = _step_metadata(record.event_log_entry.dagster_event)
        if EGRESS_METADATA_KEY in metadata:
            found.append((int(metadata[EGRESS_METADATA_KEY].value), datetime.fromtimestamp(record.timestamp, UTC)))
    return found


def _step_metadata(event: dg.DagsterEvent | None) -> dict:
    if event is None:
        return {}
    if event.event_type == dg.DagsterEventType.STEP_OUTPUT:
        return event.step_output_data.metadata
    if event.event_type == dg.DagsterEventType.ENGINE_EVENT:
        return event.engine_event_data.metadata
    user_failure = event.step_failure_data.user_failure_data
    return user_failure.metadata if user_failure else {}


def record_killed_run_egress(instance: dg.DagsterInstance, run: dg.DagsterRun, egress_bytes: int,
                             found_by: str) -> int:
    """Record on ``run`` (killed) the egress its relay had counted (``egress_bytes``, since the dump
    began) beyond what the run recorded itself before it died; the bytes recorded here.

    Killed during the dump, the run recorded nothing; killed during the stream engine's copy, it
    recorded the dump's bytes, and the copy's, which crossed the same relay, are the rest.
    """
    unrecorded = egress_bytes - sum(recorded for recorded, _ in recorded_egress(instance, run.run_id))
    if unrecorded <= 0:
        return 0
    instance.report_engine_event(
        f"Supabase egress until the run's process died, beyond what it had recorded: {unrecorded} bytes "
        f"(found by run {found_by})",
        run, EngineEventData(metadata={EGRESS_METADATA_KEY: dg.MetadataValue.int(unrecorded)}),
    )
    return unrecorded


def egress_usage(
    instance: dg.DagsterInstance, settings: EgressSettings | None = None, now: datetime | None = None
) -> EgressUsage:
    """Sum the egress recorded in the current billing cycle by runs of any status."""
    settings = settings or EgressSettings.from_env()
    now = now or datetime.now(UTC)
    cycle = BillingCycle.containing(now, settings.cycle_day)
    runs = []
    for record in instance.get_run_records(dg.RunsFilter(updated_after=cycle.start)):
        run = record.dagster_run
        for egress_bytes, measured_at in recorded_egress(instance, run.run_id):
            if cycle.start <= measured_at <= now:
                runs.append(RunEgress(run.run_id, run.status, egress_bytes, measured_at, run.tags.get(MODE_TAG, "full")))
    return EgressUsage(cycle, now, settings.budget_bytes, tuple(sorted(runs, key=lambda r: r.measured_at)))


def last_successful_egress(instance: dg.DagsterInstance, job_name: str, mode: str = "full") -> int | None:
    """What the most recent successful run of ``job_name`` in ``mode`` received: the best guess for
    the next one (a run without a mode tag was full: incremental runs came later)."""
    successes = instance.get_run_records(
        dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.SUCCESS]), limit=20
    )
    for record in successes:
        if record.dagster_run.tags.get(MODE_TAG, "full") != mode:
            continue
        measured = recorded_egress(instance, record.dagster_run.run_id)
        if measured:
            return sum(egress_bytes for egress_bytes, _ in measured)
    return None


@dataclass(frozen=True)
class BudgetCheck:
    """The cycle's usage and what the coming run is expected to add."""

    usage: EgressUsage
    estimate_bytes: int
    estimate_basis: str

    @property
    def over_budget(self) -> bool:
        return self.usage.used_bytes + self.estimate_bytes > self.usage.budget_bytes

    def refusal(self) -> str:
        """One line that fits an alert: the numbers behind the refusal and how to override it."""
        usage = self.usage
        return (
            f"egress budget: this run needs about {human_bytes(self.estimate_bytes)} ({self.estimate_basis}) "
            f"+ {human_bytes(usage.used_bytes)} used since {usage.cycle.start:%Y-%m-%d} "
            f"> {human_bytes(usage.budget_bytes)} budget; nothing was changed ({FORCE_FIELD}: true runs it anyway)"
        )


FIRST_RUN_BASIS = "the source database's size, its bytea data twice"
# Before the first incremental run, what one is expected to cost: the share of a full copy the
# incremental targets allow for a day of an app's changes.
FIRST_INCREMENTAL_SHARE = 20
FIRST_INCREMENTAL_BASIS = f"1/{FIRST_INCREMENTAL_SHARE} of a full copy (no incremental run yet)"


def estimate_run_egress(instance: dg.DagsterInstance, job_name: str, first_run_bytes: int,
                        mode: str = "full") -> tuple[int, str]:
    """The coming run's egress: the last successful run's of the same mode, else one estimated from
    ``first_run_bytes`` (from the catalog: ``DatabaseCatalog.first_dump_egress``)."""
    last = last_successful_egress(instance, job_name, mode)
    if last is not None:
        return last, "like the last successful run" if mode == "full" else f"like the last successful {mode} run"
    if mode == "incremental":
        return first_run_bytes // FIRST_INCREMENTAL_SHARE, FIRST_INCREMENTAL_BASIS
    return first_run_bytes, FIRST_RUN_BASIS


def check_run_budget(
    instance: dg.DagsterInstance,
    job_name: str,
    first_run_bytes: int,
    force: bool,
    log: logging.Logger | dg.DagsterLogManager = _LOG,
    mode: str = "full",
) -> BudgetCheck:
    """Refuse a run whose expected egress would exceed the budget, unless it is forced.

    Called before the run changes anything, so a refused run leaves the copy as it was.
    """
    estimate, basis = estimate_run_egress(instance, job_name, first_run_bytes, mode)
    check = BudgetCheck(egress_usage(instance), estimate, basis)
    if check.over_budget:
        if not force:
            raise EgressBudgetError(check.refusal())
        log.warning(f"over the egress budget, running because {FORCE_FIELD} is set: {check.refusal()}")
    return check


def egress_observation(usage: EgressUsage) -> dg.AssetObservation:
    """The cycle's egress as an observation of the ``supabase_egress`` asset, which plots it.

    Failed runs' dumps count, as they count against the budget.
    """
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(usage.runs_by_status().items()))
    return dg.AssetObservation(
        asset_key=EGRESS_ASSET_KEY,
        description=f"Supabase egress in the billing cycle {usage.cycle.describe()}",
        metadata=readable({
            "cycle": usage.cycle.describe(),
            "used_bytes": usage.used_bytes,
            "budget_bytes": usage.budget_bytes,
            "used_percent": dg.MetadataValue.float(round(100 * usage.used_share, 1)),
            "projected_bytes": usage.projected_bytes,
            "runs": usage.run_count,
            "runs_by_status": statuses or "(none)",
            "runs_by_mode": usage.by_mode() or "(none)",
        }),
    )


def format_egress_report(usage: EgressUsage, next_run_bytes: int | None, next_incremental_bytes: int | None = None) -> str:
    """What ``wehub-backup egress`` prints: used, budget, share, runs by status and mode, the projection,
    and what the next full run (and, once one ran, the next incremental run) is expected to cost."""
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(usage.runs_by_status().items()))
    next_run = (
        f"about {human_bytes(next_run_bytes)} ({next_run_bytes:,} bytes), as the last successful backup"
        if next_run_bytes is not None
        else f"no successful backup yet; a run estimates it from {FIRST_RUN_BASIS}"
    )
    return "\n".join((
        f"Supabase egress in the billing cycle {usage.cycle.describe()}",
        f"  used:       {usage.used_bytes:,} bytes ({human_bytes(usage.used_bytes)})",
        f"  budget:     {usage.budget_bytes:,} bytes ({human_bytes(usage.budget_bytes)}, {BUDGET_ENV})",
        f"  percentage: {usage.used_share:.1%} of the budget",
        f"  runs:       {usage.run_count}" + (f" ({statuses})" if statuses else ""),
        *([f"  by mode:    {usage.by_mode()}"] if usage.runs else []),
        f"  projection: {usage.projected_bytes:,} bytes ({human_bytes(usage.projected_bytes)}) by "
        f"{usage.cycle.end:%Y-%m-%d}, at this cycle's rate so far",
        f"  next run:   {next_run}",
        *([f"  next incremental run: about {human_bytes(next_incremental_bytes)} ({next_incremental_bytes:,} bytes), "
           "as the last successful incremental backup"] if next_incremental_bytes is not None else []),
    ))


@dataclass(frozen=True)
class EgressBudgetAlert(Alert):
    """The cycle's egress passed the warning share of the budget."""

    usage: EgressUsage
    link: str

    @property
    def title(self) -> str:
        return f"wehub_backup: Supabase egress at {self.usage.used_share:.0%} of the budget"

    @property
    def text(self) -> str:
        usage = self.usage
        return "\n".join((
            f"Billing cycle: {usage.cycle.describe()}",
            f"Used: {human_bytes(usage.used_bytes)} of {human_bytes(usage.budget_bytes)} "
            f"({usage.used_share:.0%}) in {usage.run_count} run(s)",
            f"Projection to the cycle's end at this rate: {human_bytes(usage.projected_bytes)}",
            f"Backups that would exceed the budget are refused ({FORCE_FIELD}: true overrides).",
            f"Runs: {self.link}",
        ))


def check_egress_budget(
    instance: dg.DagsterInstance,
    alerted_cycle: str | None,
    alert_settings: AlertChannels,
    egress_settings: EgressSettings,
    now: datetime,
    log: logging.Logger | dg.DagsterLogManager,
) -> tuple[str | None, str]:
    """Warn once per billing cycle when egress reaches ``WARNING_SHARE`` of the budget.

    Returns the cycle already warned about (the sensor's cursor) and a sentence for the tick.
    When every configured channel fails, the cycle stays unwarned so the next tick tries again.
    """
    usage = egress_usage(instance, egress_settings, now)
    cycle = usage.cycle.start.isoformat()
    state = f"{human_bytes(usage.used_bytes)} of {human_bytes(usage.budget_bytes)} ({usage.used_share:.0%}) used"
    if usage.used_share < WARNING_SHARE:
        return alerted_cycle, f"{state}: below {WARNING_SHARE:.0%}"
    if alerted_cycle == cycle:
        return alerted_cycle, f"{state}: already warned this cycle"
    link = f"{alert_settings.dagster_url.rstrip('/')}/runs"
    results = deliver_alert(EgressBudgetAlert(usage, link), alert_settings, log=log)
    if none_delivered(results):
        return alerted_cycle, f"{state}: warning not delivered, will retry"
    return cycle, f"{state}: warned"
