"""Archives of verified copies: made by real backup runs, restored by real restore runs, copied off-site
by real rclone into a real (local, crypt-wrapped) remote."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from wehub_backup.archive.store import ARCHIVE_FILE, MANIFEST_FILE, list_archives
from wehub_backup.cli import main as cli_main
from wehub_backup.definitions import build_definitions
from wehub_backup.defs.archive.config import restore_archive_run_config
from wehub_backup.defs.archive.ops import ARCHIVES_ASSET_KEY
from wehub_backup.defs.names import ARCHIVE_ALERT_TAG, ARCHIVE_TAG, RESTORE_ARCHIVE_JOB
from wehub_backup.run.marks import read_marks
from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.support.backup_runs import databases_named, run_backup, step_errors
from wehub_backup_tests.support.environment import BackupEnv
from wehub_backup_tests.support.loopback_servers import WebhookReceiver

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@pytest.fixture
def archive_dir(backup_env: BackupEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "archives"
    monkeypatch.setenv("WEHUB_ARCHIVE_DIR", str(directory))
    monkeypatch.setenv("WEHUB_ARCHIVE_MIN_FREE_MB", "0")
    return directory


def run_restore(instance: dg.DagsterInstance, archive_id: str, target: str,
                replace: bool = False) -> dg.ExecuteInProcessResult:
    job = build_definitions().get_job_def(RESTORE_ARCHIVE_JOB)
    return job.execute_in_process(run_config=restore_archive_run_config(archive_id, target, replace),
                                  instance=instance, raise_on_error=False)


def backdate_archives(directory: Path, days: int = 1) -> None:
    """Move every archive's time back, so the daily retention (the newest archive of each day) keeps
    them beside the next one."""
    for archive in list_archives(directory):
        manifest = json.loads((archive.path / MANIFEST_FILE).read_text())
        created = datetime.fromisoformat(manifest["created_at"]) - timedelta(days=days)
        (archive.path / MANIFEST_FILE).write_text(json.dumps({**manifest, "created_at": created.isoformat()}))


def table_text(cluster: PostgresCluster, database: str, user: str | None = None) -> list[tuple]:
    return cluster.query("SELECT r::text FROM (SELECT * FROM public.notes ORDER BY id) r", dbname=database, user=user)


def oid_of(vps: PostgresCluster, name: str) -> int | None:
    rows = vps.query("SELECT oid FROM pg_database WHERE datname = %s", (name,))
    return rows[0][0] if rows else None


def test_backup_archives_the_copy_and_it_restores_into_a_new_database(
    archive_dir: Path, scratch_source: str, instance: dg.DagsterInstance,
    supabase_cluster: PostgresCluster, vps_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str],
) -> None:
    result = run_backup("archive_e2e", instance)
    assert result.success, step_errors(result)
    assert result.output_for_node("archive_verified_copy") is True

    [archive] = list_archives(archive_dir)
    manifest = archive.manifest
    with vps_cluster.connect() as conn:
        copy_of = read_marks(conn, ["archive_e2e"])["archive_e2e"].source
    assert (manifest.source, manifest.database, manifest.run_id) == (copy_of, "archive_e2e", result.run_id)
    assert manifest.fingerprint.tables["public.notes"].rows == 500 and manifest.rows >= 500
    data = (archive.path / ARCHIVE_FILE).read_bytes()
    assert data.startswith(ZSTD_MAGIC) and manifest.dump_bytes > len(data) == manifest.archive_bytes
    assert hashlib.sha256(data).hexdigest() == manifest.sha256
    assert json.loads((archive.path / MANIFEST_FILE).read_text())["id"] == archive.id == archive.path.name
    for path, mode in ((archive_dir, 0o700), (archive.path, 0o700), (archive.path / ARCHIVE_FILE, 0o600),
                       (archive.path / MANIFEST_FILE, 0o600)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert instance.get_run_by_id(result.run_id).tags[ARCHIVE_TAG] == f"made {archive.id}"
    assert instance.get_latest_materialization_event(ARCHIVES_ASSET_KEY) is not None

    assert cli_main(["archives"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(archive.id + " ") and "500 rows" in line and line.endswith("checksum ok")

    started = time.monotonic()
    restored = run_restore(instance, archive.id, "archive_restored")
    took = time.monotonic() - started
    assert restored.success, step_errors(restored)
    print(f"restore of a {manifest.archive_bytes}-byte archive took {took:.1f} s")
    assert restored.output_for_node("verify_archive_restore") == manifest.rows
    assert table_text(vps_cluster, "archive_restored") == table_text(supabase_cluster, scratch_source, "postgres")
    with vps_cluster.connect() as conn:
        marks = read_marks(conn, ["archive_restored", "archive_restored__staging"])
    assert marks["archive_restored"].text() == f"wehub_backup: verified copy of {copy_of}"
    assert "archive_restored__staging" not in marks
    # A second restore into the same name needs --replace, and changes nothing without it.
    restored_oid = oid_of(vps_cluster, "archive_restored")
    capsys.readouterr()
    assert cli_main(["restore-archive", archive.id, "archive_restored"]) == 1
    printed = capsys.readouterr().out
    assert "FAILURE" in printed and "VPS database archive_restored exists; this run changed nothing" in printed
    assert oid_of(vps_cluster, "archive_restored") == restored_oid
    assert cli_main(["restore-archive", "--replace", archive.id, "archive_restored"]) == 0
    assert "SUCCESS" in capsys.readouterr().out
    assert table_text(vps_cluster, "archive_restored") == table_text(supabase_cluster, scratch_source, "postgres")
    assert oid_of(vps_cluster, "archive_restored__previous") == restored_oid


def test_the_archive_is_made_under_the_runs_lock_before_cleanup(
    archive_dir: Path, scratch_source: str, instance: dg.DagsterInstance, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("WEHUB_RUNTIME_DIR", str(runtime))
    result = run_backup("archive_locked", instance)
    assert result.success, step_errors(result)
    # The archive step checks the run's lock first: without it, it would report "was not archived".
    assert result.output_for_node("archive_verified_copy") is True
    assert instance.get_run_by_id(result.run_id).tags[ARCHIVE_TAG].startswith("made ")
    watched = ("promote_staging_database", "archive_verified_copy", "cleanup_backup_files")
    order = [(event.step_key, event.event_type) for event in result.all_events
             if event.step_key in watched and event.event_type in (dg.DagsterEventType.STEP_START,
                                                                    dg.DagsterEventType.STEP_SUCCESS)]
    assert order == [(step, kind) for step in watched
                     for kind in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS)]
    [archive] = list_archives(archive_dir)
    assert archive.manifest.run_id == result.run_id
    # The archive's password file lived in the run's own directory, which cleanup removed.
    assert list(runtime.iterdir()) == []


def test_replace_keeps_previous_and_a_corrupted_archive_is_refused_first(
    archive_dir: Path, scratch_source: str, instance: dg.DagsterInstance,
    supabase_cluster: PostgresCluster, vps_cluster: PostgresCluster,
) -> None:
    assert run_backup("archive_swap", instance).success
    old_rows = table_text(supabase_cluster, scratch_source, "postgres")
    supabase_cluster.execute("INSERT INTO public.notes (body) VALUES ('added after the first archive')",
                             dbname=scratch_source, user="postgres")
    backdate_archives(archive_dir)
    assert run_backup("archive_swap", instance).success
    new_rows = table_text(vps_cluster, "archive_swap")
    assert len(new_rows) == len(old_rows) + 1
    older, newer = list_archives(archive_dir)

    # A corrupted archive: refused before any database is created, renamed or dropped.
    damaged = newer.path / ARCHIVE_FILE
    original = damaged.read_bytes()
    damaged.write_bytes(original[:100] + bytes([original[100] ^ 0xFF]) + original[101:])
    before = {name: oid_of(vps_cluster, name) for name in ("archive_swap", "archive_swap__previous")}
    refused = run_restore(instance, newer.id, "archive_swap", replace=True)
    assert not refused.success
    assert "is damaged" in step_errors(refused)[0] and "nothing was changed" in step_errors(refused)[0]
    assert {name: oid_of(vps_cluster, name) for name in before} == before
    assert databases_named(vps_cluster, "archive_swap") == {"archive_swap", "archive_swap__previous"}
    damaged.write_bytes(original)

    # The older archive replaces the target through staging -> verify -> swap.
    replaced = run_restore(instance, older.id, "archive_swap", replace=True)
    assert replaced.success, step_errors(replaced)
    assert table_text(vps_cluster, "archive_swap") == old_rows
    assert table_text(vps_cluster, "archive_swap__previous") == new_rows
    assert oid_of(vps_cluster, "archive_swap__previous") == before["archive_swap"]
    assert databases_named(vps_cluster, "archive_swap") == {"archive_swap", "archive_swap__previous"}


def test_a_database_the_project_did_not_make_is_never_replaced(
    archive_dir: Path, scratch_source: str, instance: dg.DagsterInstance, vps_cluster: PostgresCluster,
) -> None:
    assert run_backup("archive_mine", instance).success
    [archive] = list_archives(archive_dir)
    vps_cluster.fresh_database("crm_archive_test")
    crm = oid_of(vps_cluster, "crm_archive_test")
    refused = run_restore(instance, archive.id, "crm_archive_test", replace=True)
    assert not refused.success and "was not made by wehub_backup" in step_errors(refused)[0]
    assert oid_of(vps_cluster, "crm_archive_test") == crm
    assert databases_named(vps_cluster, "crm_archive_test") == {"crm_archive_test"}
    vps_cluster.drop_database("crm_archive_test")


def test_an_archive_failure_alerts_but_the_backup_stays_a_success(
    archive_dir: Path, scratch_source: str, instance: dg.DagsterInstance, receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive_dir.parent.mkdir(exist_ok=True)
    archive_dir.write_text("a file where the archive directory should be\n")
    monkeypatch.setenv("WEHUB_ALERT_WEBHOOK_URL", receiver.url)
    result = run_backup("archive_fails", instance)
    assert result.success, step_errors(result)
    assert result.output_for_node("archive_verified_copy") is False
    run = instance.get_run_by_id(result.run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags[ARCHIVE_TAG].startswith("was not archived: ") and "not a directory" in run.tags[ARCHIVE_TAG]
    assert run.tags[ARCHIVE_ALERT_TAG].endswith(": ok")
    [alert] = receiver.payloads
    assert "the verified copy in archive_fails was not archived" in alert["text"]
    assert "the backup succeeded" in alert["text"]


def rclone_config(path: Path, backing: str, base: str, password_file: Path) -> Path:
    """An rclone config with a crypt remote ``offsite`` over ``backing:base``; the password goes in
    obscured through stdin, never as an argument."""
    obscured = subprocess.run(["rclone", "obscure", "-"], input=password_file.read_bytes(), capture_output=True,
                              check=True).stdout.decode().strip()
    path.write_text(f"[backing]\n{backing}\n\n[offsite]\ntype = crypt\nremote = backing:{base}\n"
                    f"password = {obscured}\n")
    path.chmod(0o600)
    return path


def test_offsite_copy_is_encrypted_and_a_failed_upload_alerts_and_is_retried(
    archive_dir: Path, scratch_source: str, instance: dg.DagsterInstance, receiver: WebhookReceiver,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = tmp_path / "offsite.key"
    key.write_bytes(os.urandom(24).hex().encode())
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    config = rclone_config(tmp_path / "rclone.conf", "type = local", str(remote_dir), key)
    good_config = config.read_text()
    monkeypatch.setenv("WEHUB_ARCHIVE_REMOTE", "offsite:wehub")
    monkeypatch.setenv("WEHUB_ARCHIVE_RCLONE_CONFIG", str(config))
    monkeypatch.setenv("WEHUB_ALERT_WEBHOOK_URL", receiver.url)

    first = run_backup("archive_offsite", instance)
    assert first.success, step_errors(first)
    [archive] = list_archives(archive_dir)
    assert archive.offsite["state"] == "uploaded"
    stored = [path for path in remote_dir.rglob("*") if path.is_file()]
    assert len(stored) == 2  # the archive and its manifest, names and contents encrypted
    plain = (archive.path / MANIFEST_FILE).read_bytes()
    for path in stored:
        content = path.read_bytes()
        assert archive.id not in path.name and b"archive_offsite" not in content and not content.startswith(ZSTD_MAGIC)
    fetched = subprocess.run(["rclone", f"--config={config}", "cat", f"offsite:wehub/{archive.id}/{MANIFEST_FILE}"],
                             capture_output=True, check=True).stdout
    assert fetched == plain
    assert receiver.payloads == []

    # The remote goes away (its backing becomes an SFTP server that refuses connections).
    config.write_text(good_config.replace("[backing]\ntype = local",
                                          "[backing]\ntype = sftp\nhost = 127.0.0.1\nport = 1\nuser = nobody"))
    backdate_archives(archive_dir)
    second = run_backup("archive_offsite", instance)
    assert second.success, step_errors(second)
    older, newer = list_archives(archive_dir)
    assert newer.offsite["state"] == "failed" and older.offsite["state"] == "uploaded"
    run = instance.get_run_by_id(second.run_id)
    assert run.tags[ARCHIVE_TAG].startswith("was archived but not copied off-site")
    [alert] = receiver.payloads
    assert "not copied off-site" in alert["text"] and newer.id in alert["text"]

    # Back: the next run uploads the one that failed, and its own.
    config.write_text(good_config)
    backdate_archives(archive_dir)
    third = run_backup("archive_offsite", instance)
    assert third.success, step_errors(third)
    assert [a.offsite["state"] for a in list_archives(archive_dir)] == ["uploaded"] * 3
    listed = subprocess.run(["rclone", f"--config={config}", "lsf", "offsite:wehub"], capture_output=True,
                            check=True, text=True).stdout.split()
    assert sorted(name.rstrip("/") for name in listed) == [a.id for a in list_archives(archive_dir)]
    assert len(receiver.payloads) == 1
