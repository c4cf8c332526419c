"""What an operator installs on the VPS: units, environment file, installer, and `wehub-backup doctor`.

The installer runs for real (twice, into a DESTDIR) against the harness's VPS cluster, and the
doctor checks real clusters; only the service user is an existing one (`postgres`) so the test
does not add users to this machine.
"""

from __future__ import annotations

import configparser
import os
import pwd
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml

from wehub_backup.cli import main as cli_main
from wehub_backup_tests.harness.cluster import PostgresCluster, free_tcp_port
from wehub_backup_tests.support.environment import BackupEnv

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
UNITS = ("wehub-dagster-webserver.service", "wehub-dagster-daemon.service")
TEST_SERVICE_USER = "postgres"
INSTALL_STORAGE_ROLE = "wehub_dagster_install"
_VARIABLE_LITERAL = re.compile(r"""["']((?:SUPABASE_DB|LOCAL_DB|WEHUB|DAGSTER_PG)_[A-Z0-9_]*[A-Z0-9])["']""")
_ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def variables_read_by_code() -> set[str]:
    """Every configuration variable named as a string literal in the package, or in deploy/dagster.yaml."""
    names = {"PGPASSFILE", "DAGSTER_HOME"}
    for source in (REPO / "wehub_backup").glob("*.py"):
        names |= set(_VARIABLE_LITERAL.findall(source.read_text(encoding="utf-8")))
    names |= set(re.findall(r"env: (\w+)", (DEPLOY / "dagster.yaml").read_text(encoding="utf-8")))
    return names


def variables_in_example() -> set[str]:
    return set(_ASSIGNMENT.findall((DEPLOY / "wehub_backup.env.example").read_text(encoding="utf-8")))


def test_env_example_lists_exactly_the_variables_the_code_reads() -> None:
    read, listed = variables_read_by_code(), variables_in_example()
    assert read - listed == set(), "read by the code but missing from deploy/wehub_backup.env.example"
    assert listed - read == set(), "listed in the example but read nowhere"


def test_env_example_holds_no_secret() -> None:
    text = (DEPLOY / "wehub_backup.env.example").read_text(encoding="utf-8")
    secrets = {name: value for name, value in re.findall(r"^(\w*PASSWORD\w*)=(.*)$", text, re.MULTILINE)}
    assert secrets == {"WEHUB_ALERT_SMTP_PASSWORD": ""}
    assert "DAGSTER_PG_PASSWORD" not in text


def test_pgpass_example_has_both_entries_and_the_chmod_note() -> None:
    lines = [line for line in (DEPLOY / "pgpass.example").read_text().splitlines() if line and not line.startswith("#")]
    hosts = [line.split(":")[0] for line in lines]
    assert len(lines) == 2 and all(len(line.split(":")) == 5 for line in lines)
    assert hosts[0] == "localhost" and "supabase.com" in hosts[1]
    assert "chmod 600" in (DEPLOY / "pgpass.example").read_text()


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(path)
    return unit


@pytest.mark.parametrize("name", UNITS)
def test_unit_runs_unprivileged_with_the_environment_file(name: str) -> None:
    service = read_unit(DEPLOY / name)["Service"]
    assert service["User"] == "wehub" and service["Group"] == "wehub"
    assert service["EnvironmentFile"] == "/etc/wehub_backup/wehub_backup.env"
    assert service["Restart"] == "on-failure"
    assert service["WorkingDirectory"] == "/opt/wehub_backup"
    assert service["Environment"] == "DAGSTER_HOME=/var/lib/wehub_backup/dagster_home"
    assert service["UMask"] == "0077", "Dagster's files in DAGSTER_HOME would follow the default umask"
    program, *arguments = service["ExecStart"].split()
    assert program.startswith("/opt/wehub_backup/.venv/bin/dagster-")
    assert arguments[-2:] == ["-w", "workspace.yaml"]


def test_webserver_listens_on_loopback_only() -> None:
    arguments = read_unit(DEPLOY / UNITS[0])["Service"]["ExecStart"].split()
    assert arguments[arguments.index("--host") + 1] == "127.0.0.1"


def test_production_dagster_yaml_keeps_storage_in_postgres_from_the_environment() -> None:
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    database = config["storage"]["postgres"]["postgres_db"]
    assert {key: value["env"] for key, value in database.items() if isinstance(value, dict) and "env" in value} == {
        "hostname": "DAGSTER_PG_HOST", "port": "DAGSTER_PG_PORT", "username": "DAGSTER_PG_USER", "db_name": "DAGSTER_PG_DB",
    }
    assert "password" not in database, "the password comes from the libpq password file"
    assert "storage" not in (yaml.safe_load((REPO / "dagster.yaml").read_text()) or {}), "demo/tests use SQLite"


# --- the installer -------------------------------------------------------------------------


@dataclass(frozen=True)
class Installation:
    root: Path
    env_file_text: str
    outputs: tuple[str, str]
    storage_database: str

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")


def run_installer(root: Path, cluster: PostgresCluster) -> str:
    env = {
        **os.environ, "DESTDIR": str(root), "SERVICE_USER": TEST_SERVICE_USER, "INSTALL_VENV": "no",
        "PG_ADMIN_HOST": str(cluster.socket_dir),
    }
    result = subprocess.run(["bash", str(DEPLOY / "install.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory, vps_cluster: PostgresCluster) -> Installation:
    """install.sh run twice into a DESTDIR; the operator's environment file exists beforehand."""
    root = tmp_path_factory.mktemp("destdir")
    example = (DEPLOY / "wehub_backup.env.example").read_text()
    env_text = re.sub(r"(?m)^DAGSTER_PG_HOST=.*$", "DAGSTER_PG_HOST=127.0.0.1", example)
    env_text = re.sub(r"(?m)^DAGSTER_PG_PORT=.*$", f"DAGSTER_PG_PORT={vps_cluster.port}", env_text)
    env_text = re.sub(r"(?m)^DAGSTER_PG_(USER|DB)=.*$", rf"DAGSTER_PG_\1={INSTALL_STORAGE_ROLE}", env_text)
    env_file = root / "etc/wehub_backup/wehub_backup.env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text(env_text)
    vps_cluster.drop_database(INSTALL_STORAGE_ROLE)
    vps_cluster.execute(f"DROP ROLE IF EXISTS {INSTALL_STORAGE_ROLE}")
    first = run_installer(root, vps_cluster)
    second = run_installer(root, vps_cluster)
    return Installation(root, env_text, (first, second), INSTALL_STORAGE_ROLE)


def test_installer_creates_directories_and_log_files_for_the_service_user(installation: Installation) -> None:
    for path, mode in (("/opt/supabase_backups", 0o700), ("/var/lib/wehub_backup/dagster_home", 0o750),
                       ("/var/log/supabase_backup.log", 0o640), ("/var/log/supabase_migration.log", 0o640)):
        info = installation.path(path).stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (mode, pwd.getpwnam(TEST_SERVICE_USER).pw_uid), path


def test_installer_keeps_the_operators_environment_file(installation: Installation) -> None:
    env_file = installation.path("/etc/wehub_backup/wehub_backup.env")
    assert env_file.read_text() == installation.env_file_text
    assert all("wehub_backup.env: kept" in output for output in installation.outputs)


def test_installer_creates_the_storage_database_once_with_its_password_only_in_the_password_file(
    installation: Installation, vps_cluster: PostgresCluster
) -> None:
    pgpass = installation.path("/var/lib/wehub_backup/.pgpass")
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    storage_lines = [line for line in pgpass.read_text().splitlines() if f":{installation.storage_database}:" in line]
    assert len(storage_lines) == 1, "the second run must not add another line"
    assert "created" in installation.outputs[0] and "database wehub_dagster_install: exists" in installation.outputs[1]
    # The schema is migrated as the service user, who cannot run this checkout's venv here: the
    # installer says so and names the command, rather than leaving the services to race for it.
    assert all("storage schema: " in output and "instance migrate" in output for output in installation.outputs)
    password = storage_lines[0].rsplit(":", 1)[1]
    assert password not in "".join(installation.outputs)
    with psycopg.connect(host="127.0.0.1", port=vps_cluster.port, user=installation.storage_database,
                         dbname=installation.storage_database, passfile=str(pgpass)) as conn:
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
        assert owner.fetchone()[0] == installation.storage_database


def test_installer_keeps_an_edited_password_file(installation: Installation, vps_cluster: PostgresCluster) -> None:
    pgpass = installation.path("/var/lib/wehub_backup/.pgpass")
    edited = pgpass.read_text().replace("CHANGE_ME_vps_postgres_password", "edited-by-operator")
    pgpass.write_text(edited)
    run_installer(installation.root, vps_cluster)
    assert pgpass.read_text() == edited


def test_installed_units_point_at_this_checkout_and_pass_systemd_verification(installation: Installation) -> None:
    unit_paths = [installation.path(f"/etc/systemd/system/{name}") for name in UNITS]
    for path in unit_paths:
        service = read_unit(path)["Service"]
        assert service["WorkingDirectory"] == str(REPO)
        assert service["User"] == TEST_SERVICE_USER
        assert Path(service["ExecStart"].split()[0]).is_file()
    wrapper = installation.path("/usr/local/bin/wehub-backup")
    assert os.access(wrapper, os.X_OK)
    assert f"APP_DIR={REPO}\n" in wrapper.read_text() and f"SERVICE_USER={TEST_SERVICE_USER}\n" in wrapper.read_text()
    verifier = shutil.which("systemd-analyze")
    if verifier is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd); the units were parsed above")
    result = subprocess.run([verifier, "verify", *map(str, unit_paths)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_installed_dagster_yaml_is_the_postgres_one(installation: Installation) -> None:
    installed = installation.path("/var/lib/wehub_backup/dagster_home/dagster.yaml")
    assert installed.read_text() == (DEPLOY / "dagster.yaml").read_text()


# --- wehub-backup doctor -------------------------------------------------------------------


def doctor(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str]]:
    """Run `wehub-backup doctor`; return its exit code and each check's line by name."""
    code = cli_main(["doctor"])
    lines = capsys.readouterr().out.splitlines()
    checks = {}
    for line in lines[:-1]:
        status, rest = line.split(" ", 1)
        name, detail = rest.strip().split(": ", 1)
        checks[name] = f"{status} {detail}"
    return code, checks


@pytest.fixture
def good_machine(backup_env: BackupEnv, installation: Installation, monkeypatch: pytest.MonkeyPatch,
                 vps_cluster: PostgresCluster, tmp_path: Path) -> BackupEnv:
    """The harness's clusters plus what install.sh sets up: PostgreSQL storage, directories, password line."""
    backup_env.backup_dir.mkdir()
    storage_line = next(line for line in installation.path("/var/lib/wehub_backup/.pgpass").read_text().splitlines()
                        if f":{installation.storage_database}:" in line)
    pgpass = tmp_path / "pgpass"
    pgpass.touch(mode=0o600)
    pgpass.write_text(backup_env.pgpassfile.read_text() + storage_line + "\n")
    shutil.copy(DEPLOY / "dagster.yaml", backup_env.dagster_home / "dagster.yaml")
    for name, value in {"PGPASSFILE": str(pgpass), "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(vps_cluster.port),
                        "DAGSTER_PG_USER": installation.storage_database, "DAGSTER_PG_DB": installation.storage_database,
                        "WEHUB_SCHEDULE_TIMEZONE": "Europe/Berlin"}.items():
        monkeypatch.setenv(name, value)
    return backup_env


def test_doctor_passes_on_a_good_machine(good_machine: BackupEnv, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = doctor(capsys)
    assert code == 0, checks
    assert set(checks) == {"settings", "password file", "backup directory", "backup log", "migration log", "Supabase",
                           "VPS", "client programs", "disk space", "Dagster instance", "Dagster storage", "schedule",
                           "archive settings", "archive directory", "archive space"}
    assert all(line.startswith("OK") for line in checks.values())
    archives = good_machine.backup_dir.parent / "supabase_archives"
    assert checks["archive directory"] == f"OK {archives} will be created (mode 0700)"
    assert not archives.exists()
    assert "storage in PostgreSQL" in checks["Dagster instance"]
    assert "superuser" in checks["VPS"] and "PostgreSQL 15" in checks["Supabase"]


def test_doctor_rejects_a_password_file_others_can_read(good_machine: BackupEnv, capsys: pytest.CaptureFixture[str]) -> None:
    Path(os.environ["PGPASSFILE"]).chmod(0o644)
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["password file"].startswith("FAIL") and "chmod 600" in checks["password file"]


def test_doctor_refuses_the_transaction_pooler_port(good_machine: BackupEnv, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SUPABASE_DB_PORT", "6543")
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["Supabase"].startswith("FAIL") and "transaction pooler" in checks["Supabase"]
    assert checks["VPS"].startswith("OK")


def test_doctor_names_an_unreachable_server(good_machine: BackupEnv, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    closed_port = free_tcp_port()
    with open(os.environ["PGPASSFILE"], "a") as pgpass:
        pgpass.write(f"127.0.0.1:{closed_port}:*:postgres:irrelevant\n")
    monkeypatch.setenv("SUPABASE_DB_PORT", str(closed_port))
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["Supabase"].startswith("FAIL cannot connect to the Supabase source"), checks["Supabase"]


def test_doctor_reports_a_missing_backup_directory(good_machine: BackupEnv, capsys: pytest.CaptureFixture[str]) -> None:
    good_machine.backup_dir.rmdir()
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["backup directory"] == (
        f"FAIL {good_machine.backup_dir} does not exist: create it for the service user "
        f"(install -d -o wehub -g wehub -m 0700 {good_machine.backup_dir}) or run deploy/install.sh"
    )


def test_doctor_catches_sqlite_storage_when_postgres_is_configured(
    good_machine: BackupEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(REPO / "dagster.yaml", good_machine.dagster_home / "dagster.yaml")
    code, checks = doctor(capsys)
    assert code == 1
    assert "keeps storage in SQLite: copy deploy/dagster.yaml" in checks["Dagster instance"]


def test_doctor_reports_an_unreachable_storage_database(good_machine: BackupEnv, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DAGSTER_PG_DB", "no_such_dagster_db")
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["Dagster storage"].startswith("FAIL cannot connect to")


def test_doctor_rejects_an_unknown_time_zone_and_example_passwords(
    good_machine: BackupEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEHUB_SCHEDULE_TIMEZONE", "Europe/Atlantis")
    pgpass = Path(os.environ["PGPASSFILE"])
    pgpass.write_text(re.sub(r"(?m)^(127\.0\.0\.1:\d+:\*:postgres):.*$", r"\1:CHANGE_ME_vps", pgpass.read_text(), count=1))
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["schedule"].startswith("FAIL") and "Europe/Atlantis" in checks["schedule"]
    assert "CHANGE_ME" in checks["password file"] and checks["password file"].startswith("FAIL")


@pytest.mark.parametrize(("variable", "value", "cause"), [
    ("WEHUB_BACKUP_MODE", "sometimes", "WEHUB_BACKUP_MODE must be 'full' or 'incremental', not 'sometimes'"),
    ("WEHUB_BACKUP_FULL_EVERY_DAYS", "0", "WEHUB_BACKUP_FULL_EVERY_DAYS='0' must be a whole number"),
    ("WEHUB_BACKUP_DAILY_INCREMENTAL", "maybe", "WEHUB_BACKUP_DAILY_INCREMENTAL must be one of"),
])
def test_doctor_names_a_wrong_backup_mode_setting(
    good_machine: BackupEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    variable: str, value: str, cause: str,
) -> None:
    code, checks = doctor(capsys)
    assert checks["schedule"].startswith("OK weekly full in ") and "daily incremental Monday to Saturday" in checks["schedule"]
    monkeypatch.setenv(variable, value)
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["schedule"].startswith("FAIL") and cause in checks["schedule"]


WRONG_SETTINGS = {
    "not-a-number": ("LOCAL_DB_PORT", "5432x",
                     'Value stored in env variable "LOCAL_DB_PORT" cannot be coerced into an int: '
                     "fix it in /etc/wehub_backup/wehub_backup.env"),
    "line-break": ("SUPABASE_DB_USER", "postgres\n",
                   "SUPABASE_DB_USER holds a line feed (\\n) at character 9 of 'postgres\\n': set it without line "
                   "breaks or control characters in /etc/wehub_backup/wehub_backup.env"),
}


@pytest.mark.parametrize("case", list(WRONG_SETTINGS))
def test_doctor_names_a_wrong_setting(good_machine: BackupEnv, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str], case: str) -> None:
    variable, value, expected = WRONG_SETTINGS[case]
    monkeypatch.setenv(variable, value)
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["settings"] == f"FAIL {expected}"


def test_doctor_with_sqlite_storage_and_no_dagster_pg_settings(backup_env: BackupEnv,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    backup_env.backup_dir.mkdir()
    code, checks = doctor(capsys)
    assert code == 0, checks
    assert checks["Dagster instance"].endswith("storage in SQLite under DAGSTER_HOME")
    assert "Dagster storage" not in checks


def test_doctor_asks_for_the_space_the_configured_engine_needs(
    good_machine: BackupEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """The archive engine's dump holds the rows; the stream engine's only the schema and large objects."""
    needed = {}
    for engine in ("archive", "stream"):
        monkeypatch.setenv("WEHUB_BACKUP_COPY_ENGINE", engine)
        _, checks = doctor(capsys)
        found = re.fullmatch(r"OK \d+ MiB free in .*, about (\d+) MiB needed for (.*)", checks["disk space"])
        assert found, checks["disk space"]
        needed[engine] = int(found[1]), found[2]
    assert needed["archive"][1] == "a dump"
    assert needed["stream"][1] == "the stream engine's schema dump and large objects"
    assert needed["stream"][0] < needed["archive"][0]


def test_doctor_reports_an_archive_directory_others_can_read_and_too_little_free_space(
    good_machine: BackupEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    archives = tmp_path / "archives"
    archives.mkdir(mode=0o755)
    archives.chmod(0o755)
    monkeypatch.setenv("WEHUB_ARCHIVE_DIR", str(archives))
    free_mb = shutil.disk_usage(archives).free // 2**20
    monkeypatch.setenv("WEHUB_ARCHIVE_MIN_FREE_MB", str(free_mb + 10**6))
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["archive directory"] == (f"FAIL {archives} has mode 0755; archives hold the whole database: "
                                           f"chmod 700 {archives}")
    assert checks["archive space"].startswith("FAIL ") and f"WEHUB_ARCHIVE_MIN_FREE_MB={free_mb + 10**6}: " in (
        checks["archive space"])
    assert checks["archive settings"].startswith("OK") and checks["settings"].startswith("OK")

    archives.rmdir()
    archives.write_text("a file where the archive directory should be\n")
    monkeypatch.setenv("WEHUB_ARCHIVE_MIN_FREE_MB", "0")
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["archive directory"].startswith(f"FAIL {archives} exists and is not a directory: ")
    assert checks["archive space"].startswith("OK")


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("WEHUB_ARCHIVE_KEEP_DAILY", "-1", "WEHUB_ARCHIVE_KEEP_DAILY='-1' must be a whole number between 0 and 1000"),
    ("WEHUB_ARCHIVE_KEEP_MONTHLY", "six", 'Value stored in env variable "WEHUB_ARCHIVE_KEEP_MONTHLY" cannot be '
                                          "coerced into an int"),
    ("WEHUB_ARCHIVE", "maybe", "WEHUB_ARCHIVE must be one of"),
    ("WEHUB_ARCHIVE_REMOTE", "no-colon", "WEHUB_ARCHIVE_REMOTE='no-colon' must name an rclone remote and a path"),
])
def test_doctor_names_a_wrong_archive_setting(good_machine: BackupEnv, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], variable: str, value: str,
                                              expected: str) -> None:
    monkeypatch.setenv(variable, value)
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["archive settings"].startswith(f"FAIL {expected}")
    assert "archive directory" not in checks and checks["settings"].startswith("OK")


def test_doctor_checks_rclone_for_an_offsite_remote(good_machine: BackupEnv, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "rclone.conf"
    config.write_text("[backing]\ntype = local\n\n[offsite]\ntype = crypt\nremote = backing:/nowhere\n"
                      "password = not-obscured-not-needed-to-list\n")
    config.chmod(0o600)
    monkeypatch.setenv("WEHUB_ARCHIVE_RCLONE_CONFIG", str(config))
    monkeypatch.setenv("WEHUB_ARCHIVE_REMOTE", "backing:wehub")
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["rclone"].startswith("FAIL WEHUB_ARCHIVE_REMOTE: rclone remote backing is a local remote; ")
    monkeypatch.setenv("WEHUB_ARCHIVE_REMOTE", "offsite:wehub")
    code, checks = doctor(capsys)
    assert code == 0, checks
    assert checks["rclone"] == f"OK offsite is an rclone crypt remote in {config}"
    assert "copied to offsite:wehub" in checks["archive settings"]
