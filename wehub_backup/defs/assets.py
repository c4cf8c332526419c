"""The VPS copies as Dagster assets: each successful backup materializes its target's, and a
freshness policy (``WEHUB_BACKUP_MAX_AGE_HOURS``) says on the asset page whether it is overdue.
The billing cycle's Supabase egress is an asset too, observed hourly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from wehub_backup.config import (
    BUDGET_ENV,
    PRODUCTION_TARGET,
    TESTING_TARGET,
    configured_backup_target,
    max_backup_age,
)
from wehub_backup.defs.names import BACKUP_JOB
from wehub_backup.errors import InvalidTarget, SettingsError
from wehub_backup.run.targets import validate_target_name

EGRESS_ASSET_KEY = dg.AssetKey(["supabase_egress"])


def backup_copy_asset_key(target: str) -> dg.AssetKey:
    return dg.AssetKey(["vps_backup_copy", target])


def backup_copy_asset_specs(environ: Mapping[str, str] = os.environ) -> list[dg.AssetSpec]:
    """Declared copies (testing, production and the configured target), so the asset pages exist and
    plot each successful run's egress, size and row metadata even before the first materialization.

    A configured target with an invalid name is left out rather than stopping the code location
    from loading: its scheduled run then fails, and the failure alert names the problem. So is a
    freshness policy with an invalid maximum age: the freshness sensor's ticks name that one.
    """
    targets = {TESTING_TARGET, PRODUCTION_TARGET}
    try:
        targets.add(validate_target_name(configured_backup_target(environ)))
    except InvalidTarget:
        pass
    return [
        dg.AssetSpec(
            key=backup_copy_asset_key(target),
            description=f"Verified copy of the Supabase database in VPS database {target}, refreshed by each "
            f"successful run of {BACKUP_JOB} into it: the weekly schedule (for the configured target), a "
            f"Launchpad run with target_database: {target}, or `wehub-backup backup {target}`. The job, "
            "not this page, refreshes it: its steps are the job's, so Materialize stays off.",
            group_name="vps_backup_copies",
            kinds={"postgres"},
            freshness_policy=_freshness_policy(environ),
        )
        for target in sorted(targets)
    ]


def _freshness_policy(environ: Mapping[str, str]) -> dg.FreshnessPolicy | None:
    """Overdue once the copy is older than the configured maximum age (a week's schedule and a day)."""
    try:
        return dg.FreshnessPolicy.time_window(fail_window=max_backup_age(environ))
    except SettingsError:
        return None


def egress_asset_spec() -> dg.AssetSpec:
    return dg.AssetSpec(
        key=EGRESS_ASSET_KEY,
        description="Supabase egress in the current billing cycle: used, budget (" + BUDGET_ENV + "), "
        "projection to the cycle's end; failed runs' dumps count, as they do against the budget. "
        "Observed hourly by egress_budget_sensor.",
        group_name="supabase",
    )
