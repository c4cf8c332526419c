"""``wehub-backup doctor``: check a machine before the first run and say what to fix.

Every check is a plain function returning a ``Check`` (one line: OK or FAIL, and either
what was found or what to do). Nothing is changed: no directory is created and the
databases are only read (a few kilobytes from Supabase). The password file is checked the
way libpq reads it, and the Dagster storage database is reached the way dagster-postgres
reaches it, so a pass here means the services will start.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import yaml

from wehub_backup.archive.offsite import Offsite
from wehub_backup.backup.plan import require_superuser
from wehub_backup.config import (
    ARCHIVE_DIR_ENV,
    ARCHIVE_MIN_FREE_ENV,
    ARCHIVE_REMOTE_ENV,
    BACKUP_MODE_ENV,
    DAILY_INCREMENTAL_ENV,
    DEFAULT_BACKUP_MODE,
    DEFAULT_FULL_EVERY_DAYS,
    FULL_EVERY_DAYS_ENV,
    SUPABASE_VARIABLES,
    ArchiveSettings,
    DagsterStorage,
    EgressSettings,
    backup_mode,
    dagster_home,
    dagster_storage_from_env,
    flag,
    schedule_timezone,
    string_setting,
    whole_number,
)
from wehub_backup.defs.resources import (
    BackupWorkspace,
    archive_settings_from_env,
    backup_workspace_from_env,
    supabase_database_from_env,
    vps_database_from_env,
)
from wehub_backup.errors import (
    PasswordFileError,
    PreflightError,
    SettingsError,
    VersionMismatch,
    WehubError,
    WorkspaceError,
)
from wehub_backup.pg.catalog import DatabaseCatalog, ServerInfo, read_catalog, server_info
from wehub_backup.pg.clients import PgClient, installed_clients, newest_sufficient
from wehub_backup.pg.connection import APPLICATION_NAME, MAINTENANCE_DATABASE, ConnectionInfo, error_line
from wehub_backup.pg.dump import dump_space_needed
from wehub_backup.pg.passfile import check_permissions, lookup_password
from wehub_backup.preflight import connect_or_explain
from wehub_backup.run.workdir import ensure_directory, free_bytes
from wehub_backup.units import human_bytes

ENV_FILE_HINT = "/etc/wehub_backup/wehub_backup.env"
PLACEHOLDER_PASSWORD = "CHANGE_ME"


@dataclass(frozen=True)
class Check:
    """One check's outcome: a name, pass or fail, and what was found or what to fix."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def failed(name: str, detail: str) -> Check:
    return Check(name, False, detail)


@dataclass(frozen=True)
class Settings:
    """What a run would use, resolved from the environment now."""

    supabase: ConnectionInfo
    vps: ConnectionInfo
    workspace: BackupWorkspace




# --- settings ------------------------------------------------------------------------------


def resolve_connection(factory: Callable[[], dg.ConfigurableResource]) -> ConnectionInfo:
    """A database resource as a run would see it, with its environment variables read now."""
    return factory().process_config_and_initialize().connection_info()  # type: ignore[attr-defined]


def check_settings() -> tuple[Check, Settings | None]:
    """Resolve the connection and workspace settings; name the variable that is missing or wrong."""
    if not string_setting(SUPABASE_VARIABLES.host):
        return failed("settings", f"{SUPABASE_VARIABLES.host} is not set: set it in {ENV_FILE_HINT}"), None
    try:
        settings = Settings(
            resolve_connection(supabase_database_from_env),
            resolve_connection(vps_database_from_env),
            backup_workspace_from_env().process_config_and_initialize(),
        )
    except dg.DagsterInvalidConfigError as error:
        return failed("settings", f"{_config_error(error)}: fix it in {ENV_FILE_HINT}"), None
    except SettingsError as error:
        return failed("settings", f"{error} in {ENV_FILE_HINT}"), None
    return passed("settings", f"Supabase {settings.supabase.describe()}, VPS {settings.vps.describe()}"), settings


def _config_error(error: dg.DagsterInvalidConfigError) -> str:
    """The first configuration error's cause (e.g. a port that is not a number), without Dagster's stack trace."""
    if not error.errors:
        return error_line(error)
    lines = [line.strip() for line in error.errors[0].message.splitlines() if line.strip()]
    causes = [line.split("Error: ", 1)[1] for line in lines if "Error: " in line]
    return (causes[0] if causes else lines[0]).rstrip(".")




# --- files ---------------------------------------------------------------------------------


def check_password_file(passfile: Path, logins: list[tuple[str, ConnectionInfo | DagsterStorage]]) -> Check:
    """libpq's rules: a private plain file, with a line for every login (and no example placeholder)."""
    try:
        check_permissions(passfile)
        for role, login in logins:
            password = lookup_password(passfile, login.host, login.port, login.dbname, login.user)
            if PLACEHOLDER_PASSWORD in password:
                return failed("password file", f"the entry for {role} in {passfile} still has the example's "
                                               f"{PLACEHOLDER_PASSWORD} password: put the real one there")
    except PasswordFileError as error:
        return failed("password file", str(error))
    return passed("password file", f"{passfile} (mode 0600) has entries for {', '.join(r for r, _ in logins)}")


def check_backup_directory(path: Path) -> Check:
    """The working directory must exist and be writable; creating it is the installer's job."""
    name = "backup directory"
    if not path.exists():
        return failed(name, f"{path} does not exist: create it for the service user "
                            f"(install -d -o wehub -g wehub -m 0700 {path}) or run deploy/install.sh")
    try:
        ensure_directory(path)
    except WorkspaceError as error:
        return failed(name, f"{error}: chown wehub:wehub {path}")
    return passed(name, f"{path} is writable")


def check_log_file(name: str, path: Path) -> Check:
    """A log file is appended to by every run: it, or its directory if new, must be writable."""
    if path.exists():
        if path.is_file() and os.access(path, os.W_OK):
            return passed(name, f"{path} is writable")
        return failed(name, f"{path} is not a writable file: chown wehub:wehub {path}")
    if path.parent.is_dir() and os.access(path.parent, os.W_OK):
        return passed(name, f"{path} will be created")
    return failed(name, f"cannot create {path}: create it for the service user "
                        f"(install -o wehub -g wehub -m 0640 /dev/null {path}) or run deploy/install.sh")


# --- databases -----------------------------------------------------------------------------


def check_supabase(info: ConnectionInfo) -> tuple[Check, DatabaseCatalog | None]:
    """Supabase answers on a session-mode port and the catalog is readable (needed to plan a dump)."""
    try:
        with connect_or_explain(info, "the Supabase source") as conn:
            catalog = read_catalog(conn)
    except (PreflightError, PasswordFileError, psycopg.Error) as error:
        return failed("Supabase", error_line(error)), None
    return passed("Supabase", f"{info.describe()}: PostgreSQL {catalog.server.version}, "
                              f"database {catalog.size_bytes / 2**20:.1f} MiB"), catalog


def check_vps(info: ConnectionInfo) -> tuple[Check, ServerInfo | None]:
    """The VPS server answers and the login is a superuser (roles and owners are restored)."""
    try:
        with connect_or_explain(info, "the VPS server", MAINTENANCE_DATABASE) as conn:
            server = server_info(conn)
        require_superuser(server)
    except (PreflightError, PasswordFileError, psycopg.Error) as error:
        return failed("VPS", error_line(error)), None
    return passed("VPS", f"{info.describe(MAINTENANCE_DATABASE)}: PostgreSQL {server.version}, superuser"), server


def check_client_programs(servers: Mapping[str, ServerInfo], clients: list[PgClient]) -> Check:
    """pg_dump/pg_restore/psql as a set, at least as new as the newest server they talk to."""
    name = "client programs"
    newest = max(servers.values(), key=lambda server: server.major, default=None)
    try:
        client = newest_sufficient(clients, newest.major if newest else 0)
    except VersionMismatch as error:
        return failed(name, str(error))
    majors = ", ".join(f"{role} {server.major}" for role, server in servers.items()) or "no server reached"
    return passed(name, f"pg_dump/pg_restore/psql {client.version} in {client.bindir} (servers: {majors})")


def check_free_space(backup_dir: Path, catalog: DatabaseCatalog, client_major: int, engine: str) -> Check:
    """Room for one dump of the source in the working directory (the same estimate a run of
    ``engine`` uses: the run's pg_dump is the newest installed, and only 16+ compresses)."""
    streams = engine.strip() == "stream"
    needed, free = dump_space_needed(catalog, client_major, rows_in_dump=not streams), free_bytes(backup_dir)
    purpose = "the stream engine's schema dump and large objects" if streams else "a dump"
    detail = f"{free // 2**20} MiB free in {backup_dir}, about {needed // 2**20} MiB needed for {purpose}"
    if free < needed:
        return failed("disk space", f"{detail}: free space or point WEHUB_BACKUP_DIR elsewhere")
    return passed("disk space", detail)


def check_dagster_home(home: Path | None, storage: DagsterStorage | None) -> Check:
    """DAGSTER_HOME holds a dagster.yaml whose storage matches the ``DAGSTER_PG_*`` settings."""
    name = "Dagster instance"
    if not home:
        return failed(name, f"DAGSTER_HOME is not set: set it in {ENV_FILE_HINT}")
    config_path = Path(home) / "dagster.yaml"
    if not config_path.is_file():
        return failed(name, f"{config_path} is missing: copy deploy/dagster.yaml (PostgreSQL) or dagster.yaml (SQLite)")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        return failed(name, f"cannot read {config_path}: {error_line(error)}")
    uses_postgres = "postgres" in (config.get("storage") or {})
    if uses_postgres and storage is None:
        return failed(name, f"{config_path} keeps storage in PostgreSQL but DAGSTER_PG_* are not set: "
                            f"set them in {ENV_FILE_HINT}")
    if storage is not None and not uses_postgres:
        return failed(name, f"DAGSTER_PG_* are set but {config_path} keeps storage in SQLite: "
                            f"copy deploy/dagster.yaml there")
    kind = "PostgreSQL (DAGSTER_PG_*)" if uses_postgres else "SQLite under DAGSTER_HOME"
    return passed(name, f"{config_path}: storage in {kind}")


def check_dagster_storage(storage: DagsterStorage) -> Check:
    """Connect as dagster-postgres will (password from libpq's password file) and check CREATE rights."""
    name = "Dagster storage"
    try:
        with psycopg.connect(host=storage.host, port=storage.port, user=storage.user, dbname=storage.dbname,
                             application_name=APPLICATION_NAME, connect_timeout=10) as conn:
            can_create = conn.execute("SELECT has_schema_privilege('public', 'CREATE')").fetchone()[0]
    except psycopg.Error as error:
        return failed(name, f"cannot connect to {storage.describe()}: {error_line(error)} "
                            "(deploy/install.sh creates the role and database)")
    if not can_create:
        return failed(name, f"{storage.user} cannot create tables in {storage.dbname}: "
                            f"ALTER DATABASE {storage.dbname} OWNER TO {storage.user}")
    return passed(name, f"{storage.describe()} reachable")


def check_schedule_settings() -> Check:
    """The schedules' time zone, the backup modes and the egress budget parse, so the code location
    loads and runs plan."""
    try:
        zone = schedule_timezone()
        daily = flag(DAILY_INCREMENTAL_ENV, True)
        mode = backup_mode("", string_setting(BACKUP_MODE_ENV, DEFAULT_BACKUP_MODE))
        full_every = whole_number(FULL_EVERY_DAYS_ENV, DEFAULT_FULL_EVERY_DAYS, 1)
        budget = EgressSettings.from_env()
    except SettingsError as error:
        return failed("schedule", f"{error}: fix it in {ENV_FILE_HINT}")
    incremental = "daily incremental Monday to Saturday" if daily else "no daily incremental"
    return passed("schedule", f"weekly full in {zone}, {incremental} (full at least every {full_every} days; "
                              f"other runs {mode}); egress budget {human_bytes(budget.budget_bytes)} per cycle "
                              f"starting on day {budget.cycle_day}")


# --- archives ------------------------------------------------------------------------------


def check_archives() -> list[Check]:
    """With archives on: their settings, their directory, free space over the floor, and rclone for an
    off-site remote. A problem here costs archives, not backups, but a run would alert about it."""
    try:
        settings = archive_settings_from_env()
        offsite = Offsite.from_settings(settings)
    except dg.DagsterInvalidConfigError as error:
        return [failed("archive settings", f"{_config_error(error)}: fix it in {ENV_FILE_HINT}")]
    except SettingsError as error:
        return [failed("archive settings", f"{error}: fix it in {ENV_FILE_HINT}")]
    if not settings.enabled:
        return [passed("archive settings", "archives are switched off (WEHUB_ARCHIVE=off)")]
    kept = (f"keeping the newest of {settings.keep_daily} days, {settings.keep_weekly} weeks and "
            f"{settings.keep_monthly} months")
    checks = [passed("archive settings", kept + (f", copied to {offsite.remote}" if offsite else ", no off-site copy")),
              check_archive_directory(settings.directory), check_archive_space(settings)]
    if offsite:
        checks.append(check_rclone(offsite))
    return checks


def nearest_existing(path: Path) -> Path:
    """``path`` or the closest of its parents that exists: where a new directory would be created."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_archive_directory(path: Path) -> Check:
    """An archive directory this user owns with mode 0700 (archive steps refuse others), or one it can create."""
    name = "archive directory"
    fix = f"create it for the service user (install -d -o wehub -g wehub -m 0700 {path}) or set {ARCHIVE_DIR_ENV}"
    existing = nearest_existing(path)
    if existing != path:
        if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
            return passed(name, f"{path} will be created (mode 0700)")
        return failed(name, f"cannot create {path}: {existing} is not a directory this user can write to: {fix}")
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        return failed(name, f"{path} exists and is not a directory: {fix}")
    if info.st_uid != os.getuid() or not os.access(path, os.W_OK | os.X_OK):
        return failed(name, f"{path} is not this user's to write to: chown wehub:wehub {path}")
    if stat.S_IMODE(info.st_mode) & 0o077:
        return failed(name, f"{path} has mode {stat.S_IMODE(info.st_mode):04o}; archives hold the whole database: "
                            f"chmod 700 {path}")
    return passed(name, f"{path} is private and writable")


def check_archive_space(settings: ArchiveSettings) -> Check:
    """Free space on the archive disk above ``WEHUB_ARCHIVE_MIN_FREE_MB``: below it every run prunes
    the older archives for space, down to the newest."""
    place = nearest_existing(settings.directory)
    floor_mb, free_mb = settings.min_free_bytes // 2**20, free_bytes(place) // 2**20
    detail = f"{free_mb} MiB free in {place}, {ARCHIVE_MIN_FREE_ENV}={floor_mb}"
    if free_mb < floor_mb:
        return failed("archive space", f"{detail}: each backup would prune older archives for space; free space, "
                                       f"lower {ARCHIVE_MIN_FREE_ENV} or point {ARCHIVE_DIR_ENV} elsewhere")
    return passed("archive space", detail)


def check_rclone(offsite: Offsite) -> Check:
    """rclone installed, its config file private, the remote an rclone crypt one (read locally, nothing is sent)."""
    if shutil.which("rclone") is None:
        return failed("rclone", f"{ARCHIVE_REMOTE_ENV} is set but rclone is not installed: apt-get install rclone")
    try:
        offsite.require_encrypted()
    except WehubError as error:
        return failed("rclone", str(error))
    return passed("rclone", f"{offsite.remote_name} is an rclone crypt remote in {offsite.config}")


# --- all together --------------------------------------------------------------------------


def run_checks() -> list[Check]:
    """Every check, in the order an operator fixes things; later checks skip what earlier ones could not reach."""
    settings_check, settings = check_settings()
    checks = [settings_check]
    try:
        storage = dagster_storage_from_env()
    except SettingsError as error:
        checks.append(failed("Dagster storage", str(error)))
        storage = None
    if settings:
        checks += machine_checks(settings, storage)
    checks.append(check_dagster_home(dagster_home(), storage))
    if storage:
        checks.append(check_dagster_storage(storage))
    checks.append(check_schedule_settings())
    checks += check_archives()
    return checks


def machine_checks(settings: Settings, storage: DagsterStorage | None) -> list[Check]:
    """Password file, directories, both servers, client versions and disk space."""
    logins: list[tuple[str, ConnectionInfo | DagsterStorage]] = [("Supabase", settings.supabase),
                                                                 ("the VPS", settings.vps)]
    if storage:
        logins.append(("Dagster storage", storage))
    backup_dir = Path(settings.workspace.backup_dir)
    checks = [
        check_password_file(settings.supabase.passfile, logins),
        check_backup_directory(backup_dir),
        check_log_file("backup log", Path(settings.workspace.backup_log)),
        check_log_file("migration log", Path(settings.workspace.migration_log)),
    ]
    supabase_check, catalog = check_supabase(settings.supabase)
    vps_check, vps_server = check_vps(settings.vps)
    checks += [supabase_check, vps_check]
    servers = {role: server for role, server in (("Supabase", catalog.server if catalog else None),
                                                 ("VPS", vps_server)) if server}
    clients = installed_clients(settings.workspace.extra_bindirs())
    checks.append(check_client_programs(servers, clients))
    if catalog and backup_dir.is_dir():
        checks.append(check_free_space(backup_dir, catalog, clients[0].major if clients else 0,
                                       settings.workspace.copy_engine))
    return checks


def report(checks: list[Check]) -> str:
    """The lines to print, and a last line that counts the failures."""
    failures = sum(1 for check in checks if not check.ok)
    last = f"all {len(checks)} checks passed" if not failures else f"{failures} of {len(checks)} checks failed"
    return "\n".join([check.line() for check in checks] + [last])


def run_doctor() -> int:
    """Print every check; exit status 0 only if all passed."""
    checks = run_checks()
    print(report(checks))
    return 0 if all(check.ok for check in checks) else 1
