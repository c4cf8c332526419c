"""The decorator every op of the project's jobs wears."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from wehub_backup.defs.failures import reports_failures
from wehub_backup.defs.interrupts import run_step
from wehub_backup.defs.lifecycle import require_run_locks


def guarded_op(body: Callable[..., Any] | None = None, /, **op_options: Any) -> Any:
    """``dg.op`` for a step of a run: it first checks that the run still holds its locks, stops on
    SIGINT, SIGTERM or a lost lock like on any error, and fails with the cause classified
    (its kind in the run's tags and the alert). Use as ``@guarded_op`` or ``@guarded_op(tags=...)``."""

    def decorate(function: Callable[..., Any]) -> dg.OpDefinition:
        return dg.op(**op_options)(reports_failures(run_step(require_run_locks)(function)))

    return decorate(body) if body is not None else decorate
