"""The Dagster UI as an operator sees it: Chromium (the system's package) driven by Playwright
against a real dagster-webserver and dagster-daemon on the production instance settings.

A command-line run is listed on the job's page, the Launchpad offers the configured target,
a click on Launch runs the backup, and a failed run shows its cause. With
``WEHUB_SCREENSHOTS_DIR`` set, each page is saved there (the README's pictures).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from wehub_backup.defs.names import BACKUP_JOB
from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.support.environment import BackupEnv
from wehub_backup_tests.test_webserver import (  # noqa: F401 - storage_login and webserver are fixtures
    LOCATION,
    GraphQLClient,
    StorageLogin,
    storage_login,
    wait_for_run,
    webserver,
    webserver_environment,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless as root on a machine whose network is closed: no sandbox, GPU, QUIC or calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CONFIGURED_TARGET = "wehub_from_launchpad"
REFUSED_TARGET = "Bad-Name"
PAGE_TIMEOUT_MS = 30_000
RUN_TIMEOUT_S = 90
expect.set_options(timeout=PAGE_TIMEOUT_MS)

REEXECUTE = """
mutation Reexecute($parentRunId: String!) {
  launchPipelineReexecution(reexecutionParams: {parentRunId: $parentRunId, strategy: ALL_STEPS}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on Error { message }
  }
}
"""

RUNS = """
query Runs($job: String!) {
  runsOrError(filter: {pipelineName: $job}) { ... on Runs { results { runId status tags { key value } } } }
}
"""


@pytest.fixture
def configured_target(monkeypatch: pytest.MonkeyPatch, scratch_source: str) -> str:
    """Production's setting, a target other than the testing default; a small source keeps the run short."""
    monkeypatch.setenv("WEHUB_BACKUP_TARGET_DB", CONFIGURED_TARGET)
    return CONFIGURED_TARGET


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    """The system's Chromium with a fresh profile, its clock read in UTC like the schedule's."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            timezone_id="UTC", viewport={"width": 1400, "height": 900},
        )
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


SET_NUX_SEEN = "mutation SetNuxSeen { setNuxSeen }"


def skip_welcome(client: GraphQLClient) -> None:
    """Dagster greets a browser on a local address with a welcome dialog one second after a page has
    rendered, over whatever the page shows: mark it seen on the server, as the operator's Skip does."""
    assert client(SET_NUX_SEEN)["setNuxSeen"] is True
    assert client("query ShouldShowNux { shouldShowNux }")["shouldShowNux"] is False


def screenshot(page: Page, name: str, tmp_path: Path) -> None:
    """Keep the page's picture, and its text for the test's look for passwords."""
    (tmp_path / f"{name}.html").write_text(page.content())
    folder = Path(os.environ.get("WEHUB_SCREENSHOTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))


def command_line_backup(target: str, env: dict[str, str]) -> None:
    """``wehub-backup backup TARGET`` as the operator types it, on the services' instance."""
    subprocess.run([str(Path(sys.executable).parent / "wehub-backup"), "backup", target], env=env,
                   capture_output=True, text=True, timeout=120, check=False)


def runs_by_tag(client: GraphQLClient, key: str, value: str) -> list[dict]:
    results = client(RUNS, {"job": BACKUP_JOB})["runsOrError"]["results"]
    return [run for run in results if {"key": key, "value": value} in run["tags"]]


def test_operator_pages_in_a_real_browser(
    configured_target: str, webserver: GraphQLClient, browser: BrowserContext, backup_env: BackupEnv,
    storage_login: StorageLogin, vps_cluster: PostgresCluster, tmp_path: Path,
) -> None:
    base = webserver.url.removesuffix("/graphql")
    job_page = f"{base}/locations/{LOCATION}/jobs/{BACKUP_JOB}"
    command_line_backup(REFUSED_TARGET, webserver_environment(backup_env, storage_login, vps_cluster.port))
    [cli_run] = runs_by_tag(webserver, "wehub/launched_by", "cli")
    skip_welcome(webserver)
    page = browser.new_page()

    # The job's Runs tab lists the command-line run.
    page.goto(f"{job_page}/runs")
    expect(page.get_by_text(cli_run["runId"][:8]).first).to_be_visible()
    screenshot(page, "job-runs", tmp_path)

    # The failed run states its cause where the operator looks first: its tags and the failed step.
    cause = f"invalid target database '{REFUSED_TARGET}'"
    page.goto(f"{base}/runs/{cli_run['runId']}")
    expect(page.get_by_text(re.compile(re.escape(cause))).first).to_be_visible()
    screenshot(page, "failed-run", tmp_path)

    # The Launchpad offers the configured target, and a click launches a backup into it.
    page.goto(f"{job_page}/playground")
    expect(page.locator(".CodeMirror").first).to_contain_text(f"target_database: {configured_target}")
    screenshot(page, "launchpad", tmp_path)
    page.get_by_role("button", name=re.compile("Launch Run")).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = page.url.rsplit("/runs/", 1)[1].split("?")[0]
    assert wait_for_run(webserver, run_id, RUN_TIMEOUT_S) == "SUCCESS"
    assert vps_cluster.query("SELECT count(*) FROM pg_database WHERE datname = %s", (configured_target,)) == [(1,)]
    page.reload()
    expect(page.get_by_text(f"{BACKUP_JOB}: SUCCESS (run {run_id})").first).to_be_visible()
    screenshot(page, "launched-run", tmp_path)

    # The Runs list: every run with its summary or its cause, and where the alert went.
    page.goto(f"{base}/runs")
    expect(page.get_by_text(f"SUCCESS; target: {configured_target}").first).to_be_visible()
    expect(page.get_by_text(cause).first).to_be_visible()
    screenshot(page, "runs", tmp_path)

    # The UI re-executes a command-line run as one of its own (it needs the run's code-location origin).
    relaunched = webserver(REEXECUTE, {"parentRunId": cli_run["runId"]})["launchPipelineReexecution"]
    assert relaunched["__typename"] == "LaunchRunSuccess", relaunched

    shown = "\n".join(saved.read_text() for saved in tmp_path.glob("*.html"))
    for secret in (*backup_env.passwords, storage_login.password):
        assert secret not in shown
