"""No password in a log file, a Dagster storage row, a metadata value, an alert, or any
process's argument list, across the whole test session.

pytest imports every test module before it runs the first test, so the sampler started when
this module is imported watches argument lists for the whole session. ``suite_audit`` is
session-scoped: the tests here check everything written so far, and its teardown checks
again once the last test of the session has finished (a finding fails that teardown).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from wehub_backup.defs.resources import AlertSettings
from wehub_backup_tests.faults.evidence import step_failure
from wehub_backup_tests.faults.secrets import ArgumentListSampler, files_with_secrets
from wehub_backup_tests.faults.sources import (
    CHECK_READING_VAULT_SQL,
    NOTES_SQL,
    VAULT_EXTENSION_SQL,
    drop_source,
    recreate_source,
)
from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.support.backup_runs import alert_on_failed_run, run_backup
from wehub_backup_tests.support.environment import BackupEnv, SessionPasswords
from wehub_backup_tests.support.loopback_servers import running_webhook_receiver

SESSION_SAMPLER = ArgumentListSampler(interval=0.05).start()
PLAN_LOGS = (Path("/var/log/supabase_backup.log"), Path("/var/log/supabase_migration.log"))

Findings = Callable[[], dict[str, list[str]]]


@pytest.fixture(scope="session")
def suite_audit(tmp_path_factory: pytest.TempPathFactory, session_passwords: SessionPasswords,
                pg_base_dir: Path) -> Iterator[Findings]:
    """Where the session's passwords turned up; checked again when the session ends."""
    secrets = [session_passwords.supabase_postgres, session_passwords.vps_postgres]

    def findings() -> dict[str, list[str]]:
        return {
            "files the tests wrote (logs, Dagster storage, working files)":
                files_with_secrets([tmp_path_factory.getbasetemp()], secrets),
            "the plan's log files": files_with_secrets(PLAN_LOGS, secrets),
            "PostgreSQL server logs": files_with_secrets([pg_base_dir], secrets, "*.log"),
            "process argument lists": SESSION_SAMPLER.holding(secrets),
        }

    yield findings
    leaks = {where: found for where, found in findings().items() if found}
    assert not leaks, f"a password turned up after the test session: {leaks}"


def test_failed_run_and_its_alert_hold_no_password(
    backup_env: BackupEnv, supabase_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch,
    suite_audit: Findings,
) -> None:
    """A run that gets as far as the restore (every program has run, with every password in
    play) and fails there; its alert goes to a real webhook receiver."""
    source = recreate_source(supabase_cluster, "secrets_source", NOTES_SQL + CHECK_READING_VAULT_SQL, VAULT_EXTENSION_SQL)
    monkeypatch.setenv("SUPABASE_DB_NAME", source)
    try:
        with dg.instance_for_test(temp_dir=str(backup_env.dagster_home)) as instance, \
                running_webhook_receiver() as receiver:
            result = run_backup("wehub_secrets_alert", instance)
            assert step_failure(result)[0] == "restore_into_staging_database"
            alert_on_failed_run(instance, result.dagster_run, result.get_run_failure_event(),
                                AlertSettings(webhook_url=receiver.url))
            records = "\n".join(dg.serialize_value(record) for record in instance.all_logs(result.run_id))
    finally:
        drop_source(supabase_cluster, source)

    [alert] = receiver.payloads
    assert "decrypted_secrets" in alert["text"]
    for password in backup_env.passwords:
        assert password not in alert["text"]
        assert password not in records
    assert any("pg_dump --format=directory" in argv for argv in SESSION_SAMPLER.seen)
    assert any("pg_restore " in argv for argv in SESSION_SAMPLER.seen)
    leaks = {where: found for where, found in suite_audit().items() if found}
    assert not leaks


def test_nothing_written_so_far_holds_a_password(suite_audit: Findings) -> None:
    assert SESSION_SAMPLER.passes > 0, "the argument-list sampler never ran"
    leaks = {where: found for where, found in suite_audit().items() if found}
    assert not leaks
