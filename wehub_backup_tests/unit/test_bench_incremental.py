"""The benchmark's incremental phase: how the source is changed, the monthly egress model, the report splice."""

from __future__ import annotations

import threading
import time

import pytest

from bench.changes import DELETES_PER_CHANGE, RowChanges, round_phase, row_changes, spread_keys
from bench.contenders import INCREMENT_BASE
from bench.incremental_report import (
    HEADING,
    OVER_LINK,
    IncrementRuns,
    existing_section,
    extrapolated,
    full_copies_in_budget,
    monthly_egress,
    shortest_interval_hours,
    splice_section,
    wall_time_verdict,
)
from bench.link import SharedLink


def test_row_changes_share_out_the_changed_rows() -> None:
    changes = row_changes(100_000, 0.01)
    assert changes == RowChanges(inserts=497, updates=498, deletes=1000 // DELETES_PER_CHANGE)
    assert changes.rows == 1000


def test_row_changes_of_a_tiny_share() -> None:
    assert row_changes(10, 0.01) == RowChanges(0, 0, 0)
    assert row_changes(100, 0.01) == RowChanges(0, 0, 1)  # one changed row: the delete


def test_spread_keys_are_distinct_in_range_and_spread_evenly() -> None:
    keys = spread_keys(1, 1000, 10, 0.5)
    assert keys == [51, 151, 251, 351, 451, 551, 651, 751, 851, 951]
    assert spread_keys(1, 5, 10, 0.0) == [1, 2, 3, 4, 5]  # never more keys than the range holds
    assert spread_keys(10, 9, 3, 0.5) == [] and spread_keys(1, 100, 0, 0.5) == []


def test_rounds_aim_deletes_at_other_rows() -> None:
    phases = [round_phase(n) for n in range(1, 6)]
    assert all(0 <= phase < 1 for phase in phases)
    assert len({spread_keys(1, 10_000, 5, phase)[0] for phase in phases}) == 5


def test_monthly_egress_of_weekly_full_copies_with_and_without_daily_incremental_runs() -> None:
    assert monthly_egress(700, None) == pytest.approx(3000)  # 30/7 full copies
    assert monthly_egress(700, 10) == pytest.approx(3000 + (30 - 30 / 7) * 10)
    assert monthly_egress(100, 1, days=28, full_every_days=7) == pytest.approx(4 * 100 + 24)


def test_budget_figures() -> None:
    assert full_copies_in_budget(330e6, 5e9) == 15
    hours = shortest_interval_hours(700e6, 10e6, 5e9)
    assert hours == pytest.approx(30 * 24 / ((5e9 - 3e9) / 10e6))
    assert shortest_interval_hours(2e9, 10e6, 5e9) is None  # the full copies alone exceed the budget


def test_extrapolated_scales_only_the_cost_above_an_unchanged_run() -> None:
    assert extrapolated(1.0, 3.0, 5) == pytest.approx(11.0)


REPORT = """# Benchmarks

## The targets

- old

## What each contender copied

- copies

## Machine and versions

- machine
"""


def test_splice_puts_a_new_section_before_the_copies_and_keeps_the_others() -> None:
    section = f"{HEADING}\n\nnew figures"
    spliced = splice_section(REPORT, section)
    assert spliced == REPORT.replace("## What each contender copied", f"{section}\n\n## What each contender copied")


def test_splice_replaces_an_existing_section_only() -> None:
    once = splice_section(REPORT, f"{HEADING}\n\nfirst\n\n### sub\n\nmore")
    twice = splice_section(once, f"{HEADING}\n\nsecond")
    assert twice == splice_section(REPORT, f"{HEADING}\n\nsecond")
    assert "first" not in twice and "- old" in twice and "- machine" in twice


def test_splice_appends_without_a_known_heading() -> None:
    assert splice_section("# Benchmarks\n", f"{HEADING}\n\nx") == f"# Benchmarks\n\n{HEADING}\n\nx\n"


def test_a_report_without_incremental_runs_keeps_the_section_as_written() -> None:
    written = splice_section(REPORT, f"{HEADING}\n\nmeasured\n\n### sub\n\nmore")
    assert existing_section(written) == f"{HEADING}\n\nmeasured\n\n### sub\n\nmore"
    assert splice_section(REPORT, existing_section(written)) == written
    assert existing_section(REPORT) == ""


def test_the_link_holds_all_connections_together_to_its_rate() -> None:
    """Four connections sending at once share the link: together they take their sum's time, where
    pacing each connection on its own would let them through in a quarter of it."""
    link = SharedLink(bytes_per_second=2_000_000)
    senders = [threading.Thread(target=lambda: [link.carry(25_000) for _ in range(4)]) for _ in range(4)]
    started = time.monotonic()
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert time.monotonic() - started >= 400_000 / 2_000_000 * 0.95


def chain(full_s: float, unchanged_s: float) -> dict:
    """A measured chain: a full run and an incremental one with the source unchanged."""
    def run(contender: str, seconds: float, egress: int) -> dict:
        return {"contender": contender, "seconds": seconds, "details": {
            "step_s": {"dump_supabase_database": seconds / 2}, "egress_bytes": egress,
            "staging_made_from": "a file copy of the current copy"}}
    return {"measurements": [run(INCREMENT_BASE.key, full_s, 100 * 2**20),
                             run("job_incremental_unchanged", unchanged_s, 2**20)], "changes": []}


def test_wall_time_is_judged_over_the_link_when_it_was_measured() -> None:
    results = {"incremental": chain(20.0, 12.0), OVER_LINK: {**chain(40.0, 10.0), "link_mbit": 100}}
    text = wall_time_verdict(IncrementRuns(results), "job_incremental_unchanged")
    assert "over the 100 Mbit/s link measured above): **met**: 10.0 s against 40.0 s, 0.25x" in text
    assert "On loopback, where source and VPS share one machine" in text and "12.0 s against 20.0 s, 0.60x" in text


def test_wall_time_is_judged_on_loopback_without_a_link() -> None:
    text = wall_time_verdict(IncrementRuns({"incremental": chain(20.0, 12.0)}), "job_incremental_unchanged")
    assert "on loopback): **missed**: 12.0 s against 20.0 s, 0.60x, 2.0 s over" in text
    assert "On loopback, where" not in text
