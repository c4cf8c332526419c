"""A failure's cause where the operator looks first: the step's failure event, the run's tags.

Dagster wraps an op's exception ("Error occurred while executing op ...") and shows its
traceback; the cause is a few lines down. The ops raise ``dg.Failure`` instead, whose
description is the classified one-line cause, so the failure event states it first and the
original exception stays attached as its cause. The run's tags carry the same line and its
kind, so the Runs list shows why each run failed.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import dagster as dg

from wehub_backup.alerts.classify import FailureCause, classify_failure, scrub_secrets
from wehub_backup.alerts.delivery import DeliveryResult
from wehub_backup.defs.names import ALERT_TAG, FAILURE_KIND_TAG, FAILURE_TAG

if TYPE_CHECKING:
    from dagster_shared.error import SerializableErrorInfo

P = ParamSpec("P")
R = TypeVar("R")
FAILURE_KIND_KEY = "failure_kind"
FAILURE_SUMMARY_KEY = "failure_summary"


@dataclass(frozen=True)
class RunFailure:
    """Where a run failed (a step key, or None when it failed outside its steps) and why."""

    step_key: str | None
    error_text: str
    error_classes: tuple[str, ...] = ()

    def cause(self) -> FailureCause:
        return classify_failure(self.error_text, self.error_classes)


def error_chain(error: SerializableErrorInfo | None) -> list[SerializableErrorInfo]:
    """An error and the exceptions behind it, outermost first.

    Dagster wraps an op's exception and keeps the original as the cause; the original (one of
    ours, or a psycopg or pg_dump message) is what classifies.
    """
    chain, pending = [], [error]
    while pending:
        current = pending.pop(0)
        if current is not None:
            chain.append(current)
            pending += [current.cause, current.context]
    return chain


def run_failure_of(step_key: str | None, error: SerializableErrorInfo | None, fallback: str = "") -> RunFailure:
    """The failure's messages without stack frames, and the class names of its chain."""
    chain = error_chain(error)
    text = "\n".join(part.message.strip() for part in chain)
    return RunFailure(step_key, text or fallback, tuple(part.cls_name for part in chain if part.cls_name))


def cause_of(error: BaseException) -> FailureCause:
    """The kind and one-line cause of a live exception and those behind it, as the alerts classify them."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    text = "\n".join("".join(traceback.format_exception_only(part)).strip() for part in chain)
    return RunFailure(None, text, tuple(type(part).__name__ for part in chain)).cause()


def reported_failure(error: Exception, **metadata: object) -> dg.Failure:
    """``error`` as the step's failure: its own words on one line as the event's message, its kind
    and classified summary (what the alert says) as metadata."""
    cause = cause_of(error)
    failure = dg.Failure(
        description=" ".join(scrub_secrets(str(error)).split()) or type(error).__name__,
        metadata={FAILURE_KIND_KEY: str(cause.category), FAILURE_SUMMARY_KEY: cause.summary, **metadata},
    )
    failure.__cause__ = error  # kept behind the one line, also where ``error`` was never raised
    return failure


def reports_failures(step: Callable[P, R]) -> Callable[P, R]:
    """Decorate an op's function so that any exception fails the step with its classified cause."""

    @functools.wraps(step)
    def reporting(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return step(*args, **kwargs)
        except dg.Failure:
            raise
        except Exception as error:
            raise reported_failure(error) from error

    return reporting


def failure_tags(cause: FailureCause) -> dict[str, str]:
    return {FAILURE_TAG: cause.summary, FAILURE_KIND_TAG: str(cause.category)}


def tag_failed_run(instance: dg.DagsterInstance, run_id: str, cause: FailureCause) -> None:
    """Show the cause in the Runs list (over what a re-execution inherited from the run it repeats)."""
    instance.add_run_tags(run_id, failure_tags(cause))


def untag_inherited_failure(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """A re-execution that succeeds: the failure tags it inherited are not its own (tags cannot be removed)."""
    inherited = [tag for tag in (FAILURE_TAG, FAILURE_KIND_TAG, ALERT_TAG) if tag in run.tags]
    if inherited:
        instance.add_run_tags(run.run_id, dict.fromkeys(inherited, f"none: inherited from run {run.parent_run_id}"))


def tag_step_failure(context: dg.HookContext) -> None:
    """From a failure hook: the failed step's cause on its run."""
    error = context.op_exception or RuntimeError(f"step {context.op.name} failed without an exception")
    tag_failed_run(context.instance, context.run_id, cause_of(error))


def delivery_summary(results: list[DeliveryResult]) -> str:
    """``webhook https://hooks.example: ok; e-mail smtp.example:587: failed (timed out)``."""
    if not results:
        return "logged only (no alert channel configured)"
    return "; ".join(
        f"{result.channel}: ok" if result.delivered else f"{result.channel}: failed ({result.error})"
        for result in results
    )


def record_alert_delivery(instance: dg.DagsterInstance, run: dg.DagsterRun, results: list[DeliveryResult]) -> None:
    """The alert's delivery on the run it is about: a tag for the Runs list, an event for its log."""
    summary = delivery_summary(results)
    instance.add_run_tags(run.run_id, {ALERT_TAG: summary})
    instance.report_engine_event(f"Failure alert: {summary}", run)
