"""The UI path: a real dagster-webserver on the project's workspace.yaml, storage in PostgreSQL.

The backup job is launched through the GraphQL API with the same mutation the UI's Launchpad
sends; the daemon takes it off the run queue and the run launcher runs it in a subprocess; its
metadata is read back through the API. The instance is the production one: deploy/dagster.yaml,
the systemd units' commands, a `dagster` role and database on the VPS cluster, and the role's
password only in the libpq password file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from wehub_backup.defs.names import BACKUP_JOB
from wehub_backup_tests.harness.cluster import LOOPBACK, PostgresCluster, free_tcp_port, write_pgpass
from wehub_backup_tests.support.environment import APP_OWNER, VPS_SUPERUSER, BackupEnv, SessionPasswords
from wehub_backup_tests.support.polling import wait_until
from wehub_backup_tests.support.services import stop_process_groups

REPO = Path(__file__).resolve().parents[1]
STORAGE_ROLE = "dagster"
STORAGE_DATABASE = "dagster"
LOCATION = "wehub_backup"
TARGET = "wehub_via_webserver"
STARTUP_TIMEOUT_S = 45
RUN_TIMEOUT_S = 75
TERMINAL_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}

LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
    ... on Error { message }
  }
}
"""

LOCATION_STATUS = """
query { workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""

RUN_STATUS = """
query RunStatus($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }
"""

RUN_EVENTS = """
query RunEvents($runId: ID!, $after: String) {
  logsForRun(runId: $runId, afterCursor: $after) {
    __typename
    ... on EventConnection {
      cursor hasMore
      events {
        __typename
        ... on ExecutionStepOutputEvent {
          stepKey
          metadataEntries {
            label
            ... on IntMetadataEntry { intRepr }
            ... on FloatMetadataEntry { floatValue }
            ... on TextMetadataEntry { text }
          }
        }
        ... on ExecutionStepFailureEvent { stepKey error { message } }
      }
    }
  }
}
"""


@dataclass
class GraphQLClient:
    """POSTs to /graphql and keeps every response body, so the test can search them for secrets."""

    url: str
    responses: list[str] = field(default_factory=list)

    def __call__(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            text = error.read().decode()
        self.responses.append(text)
        payload = json.loads(text)
        assert "errors" not in payload, payload["errors"]
        return payload["data"]


@dataclass(frozen=True)
class StorageLogin:
    password: str
    pgpassfile: Path


@pytest.fixture
def storage_login(vps_cluster: PostgresCluster, supabase_cluster: PostgresCluster, tmp_path: Path,
                  session_passwords: SessionPasswords) -> StorageLogin:
    """A fresh `dagster` role and database on the VPS cluster, as deploy/install.sh creates them."""
    password = secrets.token_urlsafe(18)
    vps_cluster.drop_database(STORAGE_DATABASE)
    vps_cluster.execute(f"DROP ROLE IF EXISTS {STORAGE_ROLE}")
    vps_cluster.execute(f"CREATE ROLE {STORAGE_ROLE} LOGIN")
    vps_cluster.set_password(STORAGE_ROLE, password)
    vps_cluster.fresh_database(STORAGE_DATABASE, owner=STORAGE_ROLE)
    pgpass = write_pgpass(tmp_path / "pgpass", [
        (supabase_cluster, APP_OWNER, session_passwords.supabase_postgres),
        (vps_cluster, VPS_SUPERUSER, session_passwords.vps_postgres),
        (vps_cluster, STORAGE_ROLE, password),
    ])
    return StorageLogin(password, pgpass)


def webserver_environment(backup_env: BackupEnv, login: StorageLogin, port: int) -> dict[str, str]:
    """What the systemd unit's EnvironmentFile gives the webserver (and so its runs)."""
    shutil.copy(REPO / "deploy" / "dagster.yaml", backup_env.dagster_home / "dagster.yaml")
    return {
        **os.environ,
        "PGPASSFILE": str(login.pgpassfile),
        "DAGSTER_PG_HOST": LOOPBACK,
        "DAGSTER_PG_PORT": str(port),
        "DAGSTER_PG_USER": STORAGE_ROLE,
        "DAGSTER_PG_DB": STORAGE_DATABASE,
    }


@dataclass
class Service:
    """A service's command line started as a child process in its own session, with its log."""

    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], log_path: Path) -> Service:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        return cls(process, log_path)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"{self.process.args[0]} exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]



@pytest.fixture
def webserver(backup_env: BackupEnv, storage_login: StorageLogin, vps_cluster: PostgresCluster,
              tmp_path: Path) -> Iterator[GraphQLClient]:
    """The two systemd units' commands, after install.sh's storage migration (they would race to create
    the schema): dagster-webserver on a free loopback port, and dagster-daemon."""
    port = free_tcp_port()
    bindir = Path(sys.executable).parent
    env = webserver_environment(backup_env, storage_login, vps_cluster.port)
    migrate = subprocess.run([str(bindir / "dagster"), "instance", "migrate"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)
    assert migrate.returncode == 0, "install.sh's storage migration failed:\n" + migrate.stdout + migrate.stderr
    services = [
        Service.start([str(bindir / "dagster-webserver"), "--host", LOOPBACK, "--port", str(port), "-w", "workspace.yaml"],
                      env, tmp_path / "webserver.log"),
        Service.start([str(bindir / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, tmp_path / "daemon.log"),
    ]
    client = GraphQLClient(f"http://{LOOPBACK}:{port}/graphql")
    try:
        wait_for_location(client, services[0])
        yield client
    finally:
        stop_process_groups(*(service.process for service in services))


def wait_for_location(client: GraphQLClient, webserver: Service) -> None:
    """Until the webserver answers and the code location has loaded (or say why it did not)."""

    def loaded() -> bool:
        webserver.check_alive()
        try:
            entries = client(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, ConnectionError):
            return False
        entry = next(e for e in entries if e["name"] == LOCATION)
        if entry["loadStatus"] != "LOADED":
            return False
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry["locationOrLoadError"]
        return True

    wait_until(loaded, "the code location to load", STARTUP_TIMEOUT_S, interval=0.5, context=webserver.log_tail)


def launch_backup(client: GraphQLClient, target: str) -> str:
    """The Launchpad's mutation: selector by location, repository and job, and the run config."""
    result = client(LAUNCH_RUN, {"executionParams": {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": BACKUP_JOB},
        "runConfigData": {"ops": {"plan_supabase_backup": {"config": {"target_database": target}}}},
        "executionMetadata": {"tags": [{"key": "wehub/launched_by", "value": "ui"}]},
    }})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def wait_for_run(client: GraphQLClient, run_id: str, timeout_s: float) -> str:
    def finished() -> str | None:
        status = client(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        return status if status in TERMINAL_STATUSES else None

    return wait_until(finished, f"run {run_id} to finish", timeout_s, interval=1)


def step_output_metadata(client: GraphQLClient, run_id: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Each step's output metadata (label -> value as text), and any step failure messages."""
    metadata: dict[str, dict[str, str]] = {}
    failures: list[str] = []
    cursor = None
    while True:
        connection = client(RUN_EVENTS, {"runId": run_id, "after": cursor})["logsForRun"]
        assert connection["__typename"] == "EventConnection", connection
        for event in connection["events"]:
            if event["__typename"] == "ExecutionStepOutputEvent":
                entries = metadata.setdefault(event["stepKey"], {})
                for entry in event["metadataEntries"]:
                    value = entry.get("intRepr") or entry.get("floatValue") or entry.get("text")
                    entries[entry["label"]] = str(value)
            elif event["__typename"] == "ExecutionStepFailureEvent":
                failures.append(f"{event['stepKey']}: {event['error']['message']}")
        cursor = connection["cursor"]
        if not connection["hasMore"]:
            return metadata, failures


def test_backup_launched_through_graphql_succeeds_and_reports_its_metadata(
    webserver: GraphQLClient, backup_env: BackupEnv, storage_login: StorageLogin, vps_cluster: PostgresCluster
) -> None:
    started = time.monotonic()
    run_id = launch_backup(webserver, TARGET)
    status = wait_for_run(webserver, run_id, RUN_TIMEOUT_S)
    metadata, failures = step_output_metadata(webserver, run_id)
    assert (status, failures) == ("SUCCESS", [])
    print(f"\nlaunch to SUCCESS through the webserver: {time.monotonic() - started:.1f}s")

    dump = metadata["dump_supabase_database"]
    assert int(dump["egress_bytes"]) > 0 and int(dump["rows"]) > 0
    restore, cleanup = metadata["restore_into_staging_database"], metadata["cleanup_backup_files"]
    assert int(dump["pg_dump_peak_rss_bytes"]) > 0 and float(dump["pg_dump_cpu_s"]) > 0
    assert int(restore["pg_restore_peak_rss_bytes"]) > 0
    assert int(dump["backup_dir_bytes"]) >= int(dump["artifact_bytes"]) > 0
    assert int(cleanup["run_peak_rss_bytes"]) > int(dump["pg_dump_peak_rss_bytes"]) and float(cleanup["run_cpu_s"]) > 0
    assert int(metadata["verify_restored_database"]["rows_verified"]) == int(dump["rows"])
    assert metadata["promote_staging_database"]["target"] == TARGET

    stored = vps_cluster.query("SELECT status FROM runs WHERE run_id = %s", (run_id,), dbname=STORAGE_DATABASE)
    assert stored == [("SUCCESS",)], "the run must be recorded in the PostgreSQL storage"
    assert vps_cluster.query("SELECT count(*) FROM pg_database WHERE datname = %s", (TARGET,)) == [(1,)]

    everything_served = "\n".join(webserver.responses)
    for secret in (*backup_env.passwords, storage_login.password):
        assert secret not in everything_served
