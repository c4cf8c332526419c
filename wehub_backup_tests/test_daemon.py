"""A real ``dagster-daemon`` on a temporary instance: the sensors tick, the schedule is on, queued
runs wait for each other, and a failed backup reaches a webhook on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from wehub_backup.defs.backup.config import backup_run_config
from wehub_backup.defs.backup.schedule import WEEKLY_BACKUP_CRON
from wehub_backup.defs.names import BACKUP_JOB, TARGET_TAG
from wehub_backup_tests.support.environment import BackupEnv
from wehub_backup_tests.support.loopback_servers import running_webhook_receiver
from wehub_backup_tests.support.polling import wait_until
from wehub_backup_tests.support.services import stop_process_groups

REPOSITORY = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DAGSTER_URL = "http://dagster.test:3000"
QUEUED_TARGET = "wehub_daemon"


@contextlib.contextmanager
def running_daemon(log_path: Path) -> Iterator[subprocess.Popen]:
    """``dagster-daemon run`` on the project's workspace, in its own process group, always stopped."""
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(REPOSITORY / "workspace.yaml")],
            cwd=REPOSITORY, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True,
        )
    try:
        yield daemon
    finally:
        stop_process_groups(daemon)


def wait_for(condition: Callable[[], object], seconds: float, what: str, log_path: Path) -> None:
    """``wait_until`` with the daemon log's tail in the failure."""

    def tail() -> str:
        return "daemon log:\n" + "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])

    wait_until(condition, what, seconds, interval=0.5, context=tail)


def instigator(instance: dg.DagsterInstance, name: str):  # noqa: ANN201 - InstigatorState is internal
    """The stored state of a schedule or sensor, once the daemon has seen it."""
    return next((state for state in instance.all_instigator_state() if state.instigator_name == name), None)


def ticks(instance: dg.DagsterInstance, name: str) -> list:
    state = instigator(instance, name)
    return list(instance.get_ticks(state.instigator_origin_id, state.selector_id)) if state else []


def launch_queued_backup(target: str) -> subprocess.Popen:
    """``dagster job launch``: the run goes into the instance's queue, as a scheduled run does."""
    return subprocess.Popen(
        [str(VENV_BIN / "dagster"), "job", "launch", "-w", str(REPOSITORY / "workspace.yaml"), "-j", BACKUP_JOB,
         "--config-json", json.dumps(backup_run_config(target)), "--tags", json.dumps({TARGET_TAG: target})],
        cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
    )


def finished_queued_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    records = instance.get_run_records(dg.RunsFilter(job_name=BACKUP_JOB, tags={TARGET_TAG: QUEUED_TARGET}))
    return [r for r in records if r.dagster_run.is_finished]


@pytest.mark.timeout(120)
def test_daemon_ticks_serializes_queued_runs_and_alerts_on_a_failed_backup(
    backup_env: BackupEnv, scratch_source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(REPOSITORY / "dagster.yaml", backup_env.dagster_home / "dagster.yaml")
    log_path = tmp_path / "daemon.log"
    monkeypatch.setenv("WEHUB_DAGSTER_URL", DAGSTER_URL)
    with running_webhook_receiver() as receiver:
        monkeypatch.setenv("WEHUB_ALERT_WEBHOOK_URL", receiver.url)
        # Opening the instance first creates its storage; processes starting at once would race to.
        with dg.DagsterInstance.from_config(str(backup_env.dagster_home)) as instance, running_daemon(log_path):
            launches = [launch_queued_backup(QUEUED_TARGET) for _ in range(2)]
            # The failure sensor alerts only on runs that fail after its first tick.
            wait_for(lambda: ticks(instance, "alert_on_run_failure"), 40, "the failure sensor's first tick", log_path)
            failing = subprocess.run([str(VENV_BIN / "wehub-backup"), "backup", "Bad-Name"], capture_output=True,
                                     text=True, timeout=60, env=os.environ.copy())
            assert failing.returncode == 1, failing.stdout + failing.stderr
            for launch in launches:
                output, _ = launch.communicate(timeout=60)
                assert launch.returncode == 0, output

            wait_for(lambda: receiver.payloads, 45, "the failure alert on the webhook", log_path)
            wait_for(lambda: len(finished_queued_runs(instance)) == 2, 45, "both queued runs to finish", log_path)

            # One alert, for the failed run, with its step, target, cause and link.
            [failed] = instance.get_runs(dg.RunsFilter(job_name=BACKUP_JOB, tags={TARGET_TAG: "Bad-Name"}))
            [payload] = receiver.payloads
            lines = payload["text"].splitlines()
            assert lines[0] == "wehub_backup: backup_supabase_to_vps failed (config)"
            assert lines[2:4] == ["Failed step: plan_supabase_backup", "Target: Bad-Name"]
            assert lines[4].startswith("Cause (config): invalid target database 'Bad-Name'")
            assert lines[5] == f"Run: {DAGSTER_URL}/runs/{failed.run_id}"

            # The queue ran the two runs for the same target one after the other, and both succeeded.
            first, second = sorted(finished_queued_runs(instance), key=lambda r: r.start_time or 0)
            assert [r.dagster_run.status for r in (first, second)] == [dg.DagsterRunStatus.SUCCESS] * 2
            assert first.end_time <= second.start_time

            # Every sensor ticked in this daemon; the weekly schedule is on and waits for Sunday 02:00.
            assert len(ticks(instance, "alert_on_run_failure")) >= 2
            [egress_tick, *_] = ticks(instance, "egress_budget_sensor")
            assert egress_tick.skip_reason.endswith("used: below 80%")
            [freshness_tick, *_] = ticks(instance, "backup_freshness_sensor")
            assert freshness_tick.skip_reason.endswith(": on time")
            schedule = instigator(instance, "weekly_backup_schedule")
            assert schedule is not None and schedule.is_running
            assert schedule.instigator_data.cron_schedule == WEEKLY_BACKUP_CRON
            assert {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR"} <= set(instance.get_daemon_heartbeats())
