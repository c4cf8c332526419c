"""Billing cycles, the egress settings and the projection (no server)."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from wehub_backup.config import EgressSettings
from wehub_backup.defs.egress import BillingCycle, EgressUsage, RunEgress
from wehub_backup.errors import SettingsError


@pytest.mark.parametrize(
    ("moment", "cycle_day", "start", "end"),
    [
        (datetime(2025, 3, 17, 9, tzinfo=UTC), 1, datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)),
        (datetime(2025, 12, 31, 23, 59, tzinfo=UTC), 1,
         datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
        (datetime(2025, 1, 10, tzinfo=UTC), 15, datetime(2024, 12, 15, tzinfo=UTC), datetime(2025, 1, 15, tzinfo=UTC)),
        (datetime(2025, 1, 15, tzinfo=UTC), 15, datetime(2025, 1, 15, tzinfo=UTC), datetime(2025, 2, 15, tzinfo=UTC)),
        (datetime(2024, 3, 5, tzinfo=UTC), 31, datetime(2024, 2, 29, tzinfo=UTC), datetime(2024, 3, 31, tzinfo=UTC)),
        # 01:30 in Berlin on 1 April is still 31 March in UTC, where billing cycles are counted.
        (datetime.fromisoformat("2025-04-01T01:30:00+02:00"), 1,
         datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)),
    ],
)
def test_billing_cycle_containing(moment: datetime, cycle_day: int, start: datetime, end: datetime) -> None:
    assert BillingCycle.containing(moment, cycle_day) == BillingCycle(start, end)


def test_settings_default_to_five_gigabytes_and_refuse_typos() -> None:
    assert EgressSettings.from_env({}) == EgressSettings(budget_bytes=5_000_000_000, cycle_day=1)
    assert EgressSettings.from_env({"WEHUB_EGRESS_BUDGET_BYTES": "2000000000", "WEHUB_EGRESS_CYCLE_DAY": "12"}) == \
        EgressSettings(budget_bytes=2_000_000_000, cycle_day=12)
    for variables, expected in (
        ({"WEHUB_EGRESS_BUDGET_BYTES": "5GB"}, "WEHUB_EGRESS_BUDGET_BYTES='5GB' must be a whole number at least 1"),
        ({"WEHUB_EGRESS_BUDGET_BYTES": "0"}, "at least 1"),
        ({"WEHUB_EGRESS_CYCLE_DAY": "32"}, "WEHUB_EGRESS_CYCLE_DAY='32' must be a whole number between 1 and 31"),
    ):
        with pytest.raises(SettingsError, match=expected):
            EgressSettings.from_env(variables)


def test_projection_extends_the_rate_so_far_to_the_cycle_end() -> None:
    cycle = BillingCycle.containing(datetime(2025, 4, 10, tzinfo=UTC))
    runs = tuple(
        RunEgress(f"r{day}", dg.DagsterRunStatus.SUCCESS, 200_000_000, datetime(2025, 4, day, 2, tzinfo=UTC))
        for day in (6, 13)
    )
    usage = EgressUsage(cycle, datetime(2025, 4, 16, tzinfo=UTC), 5 * 10**9, runs)
    assert usage.used_bytes == 400_000_000
    assert usage.projected_bytes == 800_000_000  # 15 of 30 days gone
    assert usage.used_share == pytest.approx(0.08)
