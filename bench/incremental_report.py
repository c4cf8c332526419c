"""BENCHMARKS.md's section on incremental backups: the runs after a full one, their targets, and
what a month of backups of a 500 MB database costs in Supabase egress with and without them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.changes import DELETES_PER_CHANGE
from bench.contenders import INCREMENT_BASE, INCREMENTAL_CONTENDERS
from bench.measure import median
from wehub_backup.backup.increment import PARTS_PER_CHUNK
from wehub_backup.config import DEFAULT_BUDGET_BYTES, DEFAULT_FULL_EVERY_DAYS
from wehub_backup.pg.chunks import CHUNK_BYTES, MAX_RANGES

MIB = 2**20
HEADING = "## Incremental backups"
OVER_LINK = "incremental_over_link"  # the results' key for the chain measured over a limited link
UNCHANGED_EGRESS_TARGET = 0.01  # of a full run's egress, the source unchanged
CHANGED_EGRESS_TARGET = 0.05  # of a full run's egress, 1% of the rows changed
WALL_SHARE_TARGET = 0.5  # "well under a full run": at most half its wall time
MODEL_DATABASE_BYTES = 500 * MIB
DAYS_PER_MONTH = 30
ONE_PERCENT, FIVE_PERCENT = "job_incremental_1pct", "job_incremental_5pct"


def monthly_egress(full_bytes: float, incremental_bytes: float | None, days: int = DAYS_PER_MONTH,
                   full_every_days: int = DEFAULT_FULL_EVERY_DAYS) -> float:
    """A month of one backup a day: a full one every ``full_every_days`` days, an incremental one on the
    days between (none without ``incremental_bytes``: full copies only)."""
    fulls = days / full_every_days
    return fulls * full_bytes + (days - fulls) * (incremental_bytes or 0.0)


def full_copies_in_budget(full_bytes: float, budget_bytes: float = DEFAULT_BUDGET_BYTES) -> int:
    return math.floor(budget_bytes / full_bytes)


def shortest_interval_hours(full_bytes: float, incremental_bytes: float, budget_bytes: float = DEFAULT_BUDGET_BYTES,
                            days: int = DAYS_PER_MONTH, full_every_days: int = DEFAULT_FULL_EVERY_DAYS) -> float | None:
    """How often incremental runs could go inside the budget beside the weekly full ones (their RPO),
    if every run changed as much as one day does; None when the full ones alone exceed it."""
    left = budget_bytes - days / full_every_days * full_bytes
    if left <= 0 or incremental_bytes <= 0:
        return None
    return days * 24 / (left / incremental_bytes)


def extrapolated(unchanged_bytes: float, changed_bytes: float, factor: float) -> float:
    """A run with ``factor`` times the changed rows of a measured one: the fixed cost of an unchanged
    run, plus the measured cost of the changed rows scaled (each changed row costs about the same)."""
    return unchanged_bytes + (changed_bytes - unchanged_bytes) * factor


@dataclass
class IncrementRuns:
    """The incremental phase's runs, by contender, with medians over the repetitions."""

    results: dict
    phase_key: str = "incremental"  # or OVER_LINK: the same chain over a limited link

    def __post_init__(self) -> None:
        self.phase = self.results[self.phase_key]
        self.runs: dict[str, list[dict]] = {}
        for m in self.phase["measurements"]:
            self.runs.setdefault(m["contender"], []).append(m)

    def wall(self, key: str) -> float:
        return median([m["seconds"] for m in self.runs[key]])

    def detail(self, key: str, name: str) -> float | None:
        values = [m["details"].get(name) for m in self.runs.get(key, [])]
        values = [v for v in values if isinstance(v, int | float)]
        return median(values) if values else None

    def step(self, key: str, step: str) -> float | None:
        values = [m["details"]["step_s"].get(step) for m in self.runs[key]]
        return median([v for v in values if v is not None]) if any(v is not None for v in values) else None

    def most_deletes_in_a_table(self, key: str) -> float:
        """Median over the repetitions of the deletes of the table that had the most."""
        most = [max(t["deletes"] for t in change["tables"].values())
                for change in self.phase["changes"] if change["contender"] == key and change["tables"]]
        return median(most) if most else 0.0

    def phase_seconds(self, key: str, phase: str) -> float | None:
        values = [(m["details"].get("load_phase_s") or {}).get(phase) for m in self.runs[key]]
        values = [v for v in values if v is not None]
        return median(values) if values else None

    def outside_steps(self, key: str) -> float:
        return median([m["seconds"] - sum(m["details"]["step_s"].values()) for m in self.runs[key]])

    def egress(self, key: str) -> float:
        return self.detail(key, "egress_bytes") or 0.0

    def full_egress(self) -> float:
        return self.egress(INCREMENT_BASE.key)

    def changed_rows(self, key: str, kinds: tuple[str, ...] = ("inserts", "updates", "deletes")) -> float:
        """Median over the repetitions of the rows changed (of ``kinds``) before the run."""
        totals = [sum(t[kind] for t in change["tables"].values() for kind in kinds)
                  for change in self.phase["changes"] if change["contender"] == key]
        return median(totals) if totals else 0.0

    def incremental_keys(self) -> list[str]:
        return [key for key in INCREMENTAL_CONTENDERS if key in self.runs]


def render_section(results: dict) -> str:
    """The whole section, or nothing when the results hold no incremental runs."""
    if not results.get("incremental") or INCREMENT_BASE.key not in IncrementRuns(results).runs:
        return ""
    runs = IncrementRuns(results)
    parts = [_introduction(runs), _runs_table(runs), _changes(runs), _over_link(results), _targets(runs),
             _monthly(runs)]
    return "\n\n".join(part for part in parts if part)


def _linked_runs(results: dict) -> IncrementRuns | None:
    """The chain measured once more with the source behind a link of limited bandwidth, if it was."""
    if not results.get(OVER_LINK):
        return None
    runs = IncrementRuns(results, OVER_LINK)
    return runs if INCREMENT_BASE.key in runs.runs else None


def _copy_verdict(runs: IncrementRuns, key: str) -> str:
    """Whether the run's copy matched the source when fingerprinted."""
    problems = runs.phase["copies"].get(key, {}).get("differences")
    return "identical" if problems == [] else (f"{len(problems)} differences" if problems else "not checked")


def _over_link(results: dict) -> str:
    runs = _linked_runs(results)
    if runs is None:
        return ""
    mbit, full = runs.phase["link_mbit"], runs.wall(INCREMENT_BASE.key)
    lines = [f"### Over a link of {mbit:g} Mbit/s", "",
             f"The same chain once, in a target of its own, with every byte the source sends held to {mbit:g} Mbit/s "
             f"({mbit / 8:g} MB/s) shared by all of the run's connections, as a VPS's link to Supabase carries "
             "them (`--link-mbit`; latency not added). The loopback runs above leave the transfer out: "
             "here it costs what it costs in service.", "",
             "| run | wall time | vs full | egress | copy |", "|---|---:|---:|---:|---|"]
    for key in [INCREMENT_BASE.key, *runs.incremental_keys()]:
        lines.append(f"| {_title(key)} | {runs.wall(key):.1f} s | {runs.wall(key) / full:.2f}x | "
                     f"{_mib(runs.egress(key))} | {_copy_verdict(runs, key)} |")
    return "\n".join(lines)


def _introduction(runs: IncrementRuns) -> str:
    results = runs.results
    repetitions = len(runs.runs[INCREMENT_BASE.key])
    grown = runs.phase.get("source_bytes_after", results["source_bytes"]) / MIB
    return f"""{HEADING}

Measured at `--scale {results['scale_mb']}` ({results['source_bytes'] / MIB:,.0f} MiB, {results['source_rows']:,} rows
at first, {grown:,.0f} MiB after the changes; {results['environment']['date']}), {repetitions} repetition(s), each in
this order into one target database of its own:
a full run (stream engine, as an incremental run streams), an incremental run with the source unchanged, then
the source changed as an app changes it and an incremental run, for each share of changed rows. The
incremental runs build on the copy the run before made, as a daily schedule's do. All with `WEHUB_ARCHIVE=off`
like the other job contenders; every copy fingerprinted against the source (rows, digests, sequences, objects).

```sh
make bench BENCH_ARGS="--scale {results['scale_mb']} --repetitions {repetitions} --contenders {','.join(runs.incremental_keys())}"
```"""


def _runs_table(runs: IncrementRuns) -> str:
    full_wall, full_egress = runs.wall(INCREMENT_BASE.key), runs.full_egress()
    lines = ["| run | median wall time | vs full | egress (dump + copy) | vs full | chunks fetched | "
             "rows from source | rows from the current copy | copy |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key in [INCREMENT_BASE.key, *runs.incremental_keys()]:
        title = _title(key)
        compared, copied = runs.detail(key, "chunks_compared"), runs.detail(key, "chunks_copied")
        chunks = f"{copied:,.0f} of {compared:,.0f}" if compared is not None and copied is not None else "all (full)"
        if runs.detail(key, "chunk_parts_compared"):
            chunks += (f" (parts: {runs.detail(key, 'chunk_parts_copied'):,.0f} of "
                       f"{runs.detail(key, 'chunk_parts_compared'):,.0f})")
        lines.append(
            f"| {title} | {runs.wall(key):.1f} s | {runs.wall(key) / full_wall:.2f}x | "
            f"{_mib(runs.egress(key))} ({_mib(runs.detail(key, 'dump_egress_bytes'))} + "
            f"{_mib(runs.detail(key, 'copy_egress_bytes'))}) | {runs.egress(key) / full_egress:.2%} | {chunks} | "
            f"{runs.detail(key, 'rows_copied') or 0:,.0f} | {runs.detail(key, 'rows_from_current_copy') or 0:,.0f} | "
            f"{_copy_verdict(runs, key)} |")
    every = "; ".join(f"{_title(key)}: " + ", ".join(f"{m['seconds']:.1f}" for m in runs.runs[key])
                      for key in [INCREMENT_BASE.key, *runs.incremental_keys()])
    loads = [m["details"].get("load_before", 0.0) for m in runs.phase["measurements"]]
    return "\n".join(lines) + f"""

Egress is what the job itself counts: its dump step (schema, catalog, the source's fingerprint and chunk
digests) plus its load step (the rows fetched). All runs (s): {every}. The 1-minute load average before
each run was {min(loads):.1f} to {max(loads):.1f} on {runs.results['environment']['nproc']} cores (other work shares the machine)."""


def _title(key: str) -> str:
    return INCREMENT_BASE.title if key == INCREMENT_BASE.key else INCREMENTAL_CONTENDERS[key].title


def _changes(runs: IncrementRuns) -> str:
    lines = ["| before | table | inserted | updated | deleted |", "|---|---|---:|---:|---:|"]
    first = {}
    for change in runs.phase["changes"]:
        first.setdefault(change["contender"], change)
    for key, change in first.items():
        for table, done in change["tables"].items():
            lines.append(f"| {INCREMENTAL_CONTENDERS[key].title} | {table} | {done['inserts']:,} | "
                         f"{done['updates']:,} | {done['deletes']:,} |")
    return f"""How the source changed (the first repetition; `bench/changes.py`): each changed table's share of rows,
half new rows with new keys, half updates of its most recent rows, and one change in {DELETES_PER_CHANGE} a delete of an
older row, spread over the key range. The changed tables are the dataset's bulk tables, all with a
one-column primary key, so the job compares them chunk by chunk (about {CHUNK_BYTES // 1024} KiB of rows each) and fetches only
the chunks whose count or digest differ. Each account update also inserts a row into `pgbench_history`, as
pgbench's own transaction does: that table has no primary key, so the incremental run copies it whole
whenever it changed. The harness's small application tables and pgbench's branches and tellers stay as they
are (no chunk of theirs is fetched).

{chr(10).join(lines)}"""


# What each incremental run's egress is held to, as a share of a full run's (none for 5%: the model's input).
EGRESS_TARGETS = {"job_incremental_unchanged": UNCHANGED_EGRESS_TARGET, ONE_PERCENT: CHANGED_EGRESS_TARGET}


def _targets(runs: IncrementRuns) -> str:
    lines = [_egress_line(runs, key, EGRESS_TARGETS.get(key)) for key in runs.incremental_keys()]
    lines += [wall_time_verdict(runs, key) for key in runs.incremental_keys()]
    return "### The targets\n\n" + "\n".join(f"- {line}" for line in lines)


def _verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def _egress_line(runs: IncrementRuns, key: str, share: float | None) -> str:
    """The run's egress against its target (if it has one), and what it consists of."""
    full_egress, egress = runs.full_egress(), runs.egress(key)
    title = INCREMENTAL_CONTENDERS[key].title
    if share is None:
        text = f"Egress of {title} (no target; the monthly figures below use it): {_mib(egress)}, {egress / full_egress:.2%}"
    else:
        text = (f"Egress of {title} <= {share:.0%} of a full run's: {_verdict(egress <= share * full_egress)}: "
                f"{_mib(egress)} against {_mib(full_egress)}, {egress / full_egress:.2%}")
        if egress > share * full_egress:
            text += f", {_mib(egress - share * full_egress)} over"
    dump, copy = runs.detail(key, "dump_egress_bytes") or 0.0, runs.detail(key, "copy_egress_bytes") or 0.0
    text += (f". Of it, the dump step {_mib(dump)} (the schema, catalog reads and fingerprint queries, which do not "
             f"grow with the rows, and {runs.detail(key, 'chunk_digests') or 0:,.0f} chunk digests, about "
             f"{(runs.detail(key, 'chunk_digest_bytes') or 0.0) / 1024:,.0f} KiB) and the copy {_mib(copy)}")
    copied = runs.detail(key, "chunks_copied")
    if copied:
        text += _copy_reasons(runs, key, copied, copy)
    return text + "."


def _copy_reasons(runs: IncrementRuns, key: str, copied: float, copy: float) -> str:
    """Why the copy fetched what it did: where the changed rows lie, and what a chunk costs."""
    changed, deletes = runs.changed_rows(key), runs.changed_rows(key, ("deletes",))
    parts, parts_copied = runs.detail(key, "chunk_parts_compared"), runs.detail(key, "chunk_parts_copied")
    fetched = (f"{copied:,.0f} of {runs.detail(key, 'chunks_compared') or 0:,.0f} chunks changed, compared again in "
               f"{parts:,.0f} parts of which {parts_copied:,.0f} were fetched," if parts else
               f"{copied:,.0f} of {runs.detail(key, 'chunks_compared') or 0:,.0f} chunks fetched")
    scattered = (f"so each costs a part of its chunk (about {CHUNK_BYTES // PARTS_PER_CHUNK // 1024} KiB)" if parts else
                 f"so up to {min(deletes, copied):,.0f} chunks (about {_mib(min(deletes, copied) * CHUNK_BYTES)}) are "
                 "fetched for them alone")
    text = (f": {fetched} for {changed:,.0f} changed rows, {runs.detail(key, 'rows_copied') or 0:,.0f} rows sent "
            f"({copy / max(changed, 1):,.0f} bytes per changed row). The new and updated rows lie together at the end "
            f"of each key range, in a few chunks; the {deletes:,.0f} deletes are scattered, {scattered}")
    if runs.most_deletes_in_a_table(key) > MAX_RANGES:
        text += (f"; where a table's changed chunks form more than {MAX_RANGES} runs, they go in several copies "
                 "(a copy's statement names at most that many key ranges), each reading the table on the source")
    return text + "; `pgbench_history` (no primary key) comes whole"


FILE_COPY = "a file copy of the current copy"


def wall_time_verdict(runs: IncrementRuns, key: str) -> str:
    """The wall-time verdict, judged where the chain was measured as it runs in service: over the link
    when it was measured (the source is across a network, as Supabase is), else on loopback. The
    loopback figures follow with where their time goes."""
    base = INCREMENT_BASE.key
    full, full_egress = runs.wall(base), runs.full_egress()
    linked = _linked_runs(runs.results)
    judged = linked if linked is not None and key in linked.runs else runs
    where = f"over the {linked.phase['link_mbit']:g} Mbit/s link measured above" if judged is linked else "on loopback"
    judged_full = judged.wall(base)
    ratio = judged.wall(key) / judged_full
    text = (f"Wall time of {INCREMENTAL_CONTENDERS[key].title} well under a full run's (read as <= "
            f"{WALL_SHARE_TARGET:.0%}, {where}): {_verdict(ratio <= WALL_SHARE_TARGET)}: {judged.wall(key):.1f} s "
            f"against {judged_full:.1f} s, {ratio:.2f}x")
    if ratio > WALL_SHARE_TARGET:
        text += f", {judged.wall(key) - WALL_SHARE_TARGET * judged_full:.1f} s over"
    if judged is linked:
        text += (f". On loopback, where source and VPS share one machine and the transfer costs almost nothing, "
                 f"{runs.wall(key):.1f} s against {full:.1f} s, {runs.wall(key) / full:.2f}x")

    def versus(value: float | None, reference: float | None) -> str:
        return f"{_seconds(value)} against {_seconds(reference)}"

    steps = ", ".join(f"{label} {versus(runs.step(key, step), runs.step(base, step))}" for label, step in (
        ("plan", "plan_supabase_backup"), ("dump", "dump_supabase_database"), ("stage", "recreate_staging_database"),
        ("load", "restore_into_staging_database"), ("verification", "verify_restored_database")))
    made = {m["details"].get("staging_made_from") for m in runs.runs[key]}
    if made == {FILE_COPY}:
        parts = runs.phase_seconds(key, "parts")
        how = ("Staging was a file copy of the current copy, so only the changed chunks were written (the load's "
               f"copy phase {versus(runs.phase_seconds(key, 'copy'), runs.phase_seconds(base, 'copy'))}"
               + (f", after {_seconds(parts)} comparing the changed chunks in parts, with planner statistics "
                  "gathered first for the tables written" if parts else "") + "). What is "
               "left is work no incremental run can skip: the source's chunk digests beside the schema dump, the "
               "verification of all of staging (which also digests staging at the bounds the source was cut at, "
               "crowded chunks cut again by the key's index, for the next run: the plan step then reads the "
               "current copy's digests from that record in "
               f"{_seconds(runs.detail(key, 'current_copy_read_s'))}), and Dagster's start-up")
        copy, full_copy = runs.phase_seconds(key, "copy"), runs.phase_seconds(base, "copy")
        if copy and full_copy and copy >= full_copy / 2:
            how += (f". Here the copy phase is the most of it: {runs.detail(key, 'rows_copied') or 0:,.0f} rows "
                    "written in place, each range deleted and inserted with every index of its table kept up to "
                    "date, where a full run loads bare tables and builds each index once")
    else:
        how = ("Staging was built from the schema up (" + ", ".join(sorted(str(m) for m in made)) + "): the "
               f"{runs.detail(key, 'rows_from_current_copy') or 0:,.0f} unchanged rows were copied from the current "
               "copy and every index built again")
    return text + (
        f". {how}. Steps (medians): {steps}; outside any step "
        f"{versus(runs.outside_steps(key), runs.outside_steps(base))} (loopback). What an incremental run saves above "
        f"all is the transfer from the source: over a real link to Supabase the full run's {_mib(full_egress)} "
        f"cross it, the incremental run's {_mib(runs.egress(key))} ({runs.egress(key) / full_egress:.1%})."
    )


def model_figures(runs: IncrementRuns) -> dict[str, float | str]:
    """Per-run egress of a 500 MB database: the measured figures scaled by size, and the 5% run's
    measured or extrapolated from the 1% run's changed rows."""
    factor = MODEL_DATABASE_BYTES / runs.results["source_bytes"]
    figures: dict[str, float | str] = {"factor": factor, "full": runs.full_egress() * factor}
    if ONE_PERCENT in runs.runs:
        figures["1%"] = runs.egress(ONE_PERCENT) * factor
    scaled = None
    if ONE_PERCENT in runs.runs and "job_incremental_unchanged" in runs.runs:
        scaled = extrapolated(runs.egress("job_incremental_unchanged"), runs.egress(ONE_PERCENT), 5) * factor
    if FIVE_PERCENT in runs.runs:
        figures["5%"] = runs.egress(FIVE_PERCENT) * factor
        figures["5% basis"] = "measured" + (f"; 5x the 1% run's cost above an unchanged run would have given "
                                            f"{_mib(scaled)}" if scaled is not None else "")
    elif scaled is not None:
        figures["5%"], figures["5% basis"] = scaled, "not measured: 5x the 1% run's cost above an unchanged run"
    return figures


def _monthly(runs: IncrementRuns) -> str:
    figures = model_figures(runs)
    full = float(figures["full"])
    budget = DEFAULT_BUDGET_BYTES
    weekly = DEFAULT_FULL_EVERY_DAYS
    rows = ["| schedule | egress a month | of the 5 GB budget | RPO |", "|---|---:|---:|---|"]
    rows.append(_schedule_row(f"full copy every {weekly} days only", monthly_egress(full, None), budget,
                              f"{weekly} days"))
    rows.append(_schedule_row("full copy every day", DAYS_PER_MONTH * full, budget, "1 day"))
    for share in ("1%", "5%"):
        if share not in figures:
            continue
        incremental = float(figures[share])
        interval = shortest_interval_hours(full, incremental, budget)
        rpo = "1 day" + (f" (at this run's egress, what the full copies leave of the budget pays for one every "
                         f"{interval:.1f} h)" if interval else "")
        rows.append(_schedule_row(f"daily incremental ({share} of rows changed a day) + full every {weekly} days",
                                  monthly_egress(full, incremental), budget, rpo))
    fits = full_copies_in_budget(full, budget)
    basis = (f"the 5% run {figures['5% basis']}" if "5% basis" in figures else "no 5% figure")
    return f"""### A month of backups of a 500 MB database

Per run, scaled from the measured {runs.results['source_bytes'] / MIB:,.0f} MiB source to 500 MiB
(x{float(figures['factor']):.2f}; egress grows with the rows and chunks): full {_mib(full)}, incremental with 1%
of rows changed {_mib(float(figures['1%'])) if '1%' in figures else 'n/a'}, with 5%
{_mib(float(figures['5%'])) if '5%' in figures else 'n/a'} ({basis}). A month is {DAYS_PER_MONTH} days, a full copy
every {weekly} days is {DAYS_PER_MONTH / weekly:.1f} of them; each day's change is taken to be the same.
The budget is `WEHUB_EGRESS_BUDGET_BYTES`' default, {budget / 10**9:.0f} GB (10^9 bytes).

{chr(10).join(rows)}

Inside 5 GB fit {fits} full copies a month: with full copies only, one every {DAYS_PER_MONTH / fits:.1f} days
at best (RPO {DAYS_PER_MONTH / fits:.1f} days). Daily incremental runs beside the weekly full one give an RPO of
1 day for {_growth(full, figures)} the egress of the weekly full copies alone."""


def _growth(full: float, figures: dict[str, float | str]) -> str:
    """How many times the weekly full copies' egress a month with daily incremental runs costs, per change share."""
    weekly = monthly_egress(full, None)
    return " and ".join(f"{monthly_egress(full, float(figures[share])) / weekly:.2f}x (at {share} daily change)"
                        for share in ("1%", "5%") if share in figures) or "n/a"


def _schedule_row(name: str, egress: float, budget: float, rpo: str) -> str:
    share = egress / budget
    return f"| {name} | {egress / 10**9:,.2f} GB | {share:.0%}{'' if share <= 1 else ' (over)'} | {rpo} |"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MIB:,.2f} MiB"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def splice_section(document: str, section: str, before: tuple[str, ...] = ("## What each contender copied",
                                                                          "## Machine and versions")) -> str:
    """``document`` with its incremental section replaced by ``section``, or ``section`` put before the
    first of the ``before`` headings it has (at the end without any): the other sections stay as written."""
    lines = document.rstrip("\n").split("\n")
    bounds = _section_bounds(lines)
    if bounds is None:
        at = next((lines.index(h) for h in before if h in lines), len(lines))
        bounds = at, at
    start, end = bounds
    replacement = section.rstrip("\n").split("\n") + [""]
    if start == len(lines):
        replacement = ["", *replacement]
    return "\n".join(lines[:start] + replacement + lines[end:]).rstrip("\n") + "\n"


def existing_section(document: str) -> str:
    """The incremental section of ``document`` as written ('' without one): what a report of the other
    contenders' runs keeps, since they measured none of it."""
    lines = document.rstrip("\n").split("\n")
    bounds = _section_bounds(lines)
    return "\n".join(lines[bounds[0]:bounds[1]]).rstrip("\n") if bounds else ""


def _section_bounds(lines: list[str]) -> tuple[int, int] | None:
    """Where the incremental section starts and the next section begins, if ``lines`` have it."""
    if HEADING not in lines:
        return None
    start = lines.index(HEADING)
    return start, next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
