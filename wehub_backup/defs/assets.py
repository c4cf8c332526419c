"""The VPS copies as Dagster assets: each successful backup materializes its target's."""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from wehub_backup.config import PRODUCTION_TARGET, TESTING_TARGET, configured_backup_target
from wehub_backup.errors import InvalidTarget
from wehub_backup.run.targets import validate_target_name


def backup_copy_asset_key(target: str) -> dg.AssetKey:
    return dg.AssetKey(["vps_backup_copy", target])


def backup_copy_asset_specs(environ: Mapping[str, str] = os.environ) -> list[dg.AssetSpec]:
    """Declared copies (testing, production and the configured target), so the asset pages exist and
    plot each successful run's egress, size and row metadata even before the first materialization.

    A configured target with an invalid name is left out rather than stopping the code location
    from loading: its scheduled run then fails, and the failure alert names the problem.
    """
    targets = {TESTING_TARGET, PRODUCTION_TARGET}
    try:
        targets.add(validate_target_name(configured_backup_target(environ)))
    except InvalidTarget:
        pass
    return [
        dg.AssetSpec(
            key=backup_copy_asset_key(target),
            description=f"Verified copy of the Supabase database in VPS database {target}, "
            "refreshed by each successful backup run.",
            group_name="vps_backup_copies",
            kinds={"postgres"},
        )
        for target in sorted(targets)
    ]
