"""A run's summary on the run itself: what ``wehub-backup`` prints, for runs the UI launched too."""

from __future__ import annotations

from dataclasses import replace

import dagster as dg

from wehub_backup.config import dagster_url
from wehub_backup.defs.failures import untag_inherited_failure
from wehub_backup.defs.names import SUMMARY_TAG
from wehub_backup.summary import format_summary, headline, summarize_run


def report_outcome(context: dg.OpExecutionContext | dg.HookContext, success: bool) -> None:
    """The summary in one line as a tag (the Runs list, the run page's header), in full as an event.

    Written by the run's last step or its failure hook, before Dagster records the run's end,
    hence the outcome passed in.
    """
    summary = replace(summarize_run(context.instance, context.run_id), success=success)
    context.instance.add_run_tags(context.run_id, {SUMMARY_TAG: headline(summary)})
    run = context.instance.get_run_by_id(context.run_id)
    if success and run is not None:
        untag_inherited_failure(context.instance, run)
    context.log.info(format_summary(summary, dagster_url()))
