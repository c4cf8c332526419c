"""Connection, workspace, archive and alert settings as Dagster resources, bound to environment variables.

Values are ``dg.EnvVar``s where a variable is set: read when a run starts, shown by name in the
UI. Passwords are not settings: they live only in the libpq password file (``PGPASSFILE``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from wehub_backup import config
from wehub_backup.alerts.delivery import AlertChannels, SmtpServer
from wehub_backup.config import SUPABASE_VARIABLES, VPS_VARIABLES, ArchiveSettings, DatabaseVariables
from wehub_backup.defs.failures import reported_failure
from wehub_backup.errors import NotResumable, SettingsError
from wehub_backup.pg.connection import ConnectionInfo, is_local_host
from wehub_backup.pg.passfile import default_passfile


def _variables(field: str) -> str:
    """Which variable sets ``field`` of the ``supabase`` and the ``vps`` resource."""
    return f"{getattr(SUPABASE_VARIABLES, field)} (supabase), {getattr(VPS_VARIABLES, field)} (vps)"


class PostgresDatabase(dg.ConfigurableResource):
    """A PostgreSQL database this project reads from or writes to (Supabase or the VPS)."""

    host: str = Field(default="localhost", description=f"Set by {_variables('host')}.")
    port: int = Field(default=5432, description=f"Set by {_variables('port')}.")
    user: str = Field(description=f"Set by {_variables('user')}.")
    dbname: str = Field(description=f"Set by {_variables('name')}.")
    sslmode: str = Field(default="", description=f"Set by {_variables('sslmode')}; empty: prefer for a local host, "
                         "require for any other.")
    passfile: str = Field(default="", description=f"Set by {config.PASSFILE_ENV}; empty: ~/.pgpass. "
                          "The only place passwords live.")
    lock_timeout_seconds: int = Field(default=config.DEFAULT_LOCK_TIMEOUT_S,
                                      description=f"Set by {config.LOCK_TIMEOUT_ENV}: how long a session waits for a lock.")
    stall_timeout_seconds: int = Field(default=config.DEFAULT_STALL_TIMEOUT_S,
                                       description=f"Set by {config.STALL_TIMEOUT_ENV}: how long a dump waits for a "
                                       "source that sends nothing.")
    variables: dict[str, str] = Field(default={}, description="The environment variable behind each field, for refusals.")

    def connection_info(self) -> ConnectionInfo:
        """Resolve defaults: TLS is required for any non-local host unless set explicitly.

        A timeout of 0 would mean "wait for ever" to PostgreSQL: it is refused. Each value is
        checked first; a refusal names the variable it came from (``variables`` maps a field to
        it) and the character.
        """
        for value, variable in ((self.lock_timeout_seconds, config.LOCK_TIMEOUT_ENV),
                                (self.stall_timeout_seconds, config.STALL_TIMEOUT_ENV)):
            if value < 1:
                raise SettingsError(f"{variable} must be at least 1 second, not {value}")
        for field in ("host", "user", "dbname", "sslmode", "passfile"):
            config.refuse_control_characters(self.variables.get(field, field), getattr(self, field))
        sslmode = self.sslmode or ("prefer" if is_local_host(self.host) else "require")
        passfile = Path(self.passfile) if self.passfile else default_passfile()
        return ConnectionInfo(self.host, self.port, self.user, self.dbname, sslmode, passfile,
                              lock_timeout_s=self.lock_timeout_seconds, stall_timeout_s=self.stall_timeout_seconds)


class BackupWorkspace(dg.ConfigurableResource):
    """Where working files and the plain-text run logs go, and how child processes run."""

    backup_dir: str = Field(default=config.DEFAULT_BACKUP_DIR, description=f"Set by {config.BACKUP_DIR_ENV}.")
    backup_log: str = Field(default=config.DEFAULT_BACKUP_LOG, description=f"Set by {config.BACKUP_LOG_ENV}.")
    migration_log: str = Field(default=config.DEFAULT_MIGRATION_LOG,
                               description=f"Set by {config.MIGRATION_LOG_ENV}.")
    pg_bindirs: str = Field(default="", description=f"Set by {config.PG_BINDIRS_ENV}; empty: the system's "
                            "PostgreSQL client programs only.")
    low_priority: bool = Field(default=True, description="pg_dump, pg_restore and psql run under nice and ionice.")
    runtime_dir: str = Field(default="", description=f"Set by {config.RUNTIME_DIR_ENV}; empty: $XDG_RUNTIME_DIR or "
                             "/dev/shm (the private password files of child programs, never on a disk).")

    copy_engine: str = Field(default=config.DEFAULT_COPY_ENGINE, description=f"Set by {config.COPY_ENGINE_ENV}: "
                             "'archive' (pg_dump to disk, then pg_restore) or 'stream' (COPY straight into staging).")
    copy_range_mb: int = Field(default=config.DEFAULT_COPY_RANGE_MB, description=f"Set by {config.COPY_RANGE_ENV}: "
                               "the stream engine copies a table larger than this in page ranges.")
    backup_mode: str = Field(default=config.DEFAULT_BACKUP_MODE, description=f"Set by {config.BACKUP_MODE_ENV}: "
                             "'full', or 'incremental' (only the chunks that changed since the verified copy).")
    full_every_days: int = Field(default=config.DEFAULT_FULL_EVERY_DAYS, description=f"Set by "
                                 f"{config.FULL_EVERY_DAYS_ENV}: an incremental run is full once the last full "
                                 "copy is this many days old.")

    def extra_bindirs(self) -> list[Path]:
        return [Path(entry) for entry in self.pg_bindirs.split(":") if entry]

    def runtime_root(self) -> Path:
        """Where runs keep their password files: ``runtime_dir``, else a memory file system's."""
        return Path(self.runtime_dir) if self.runtime_dir else config.default_runtime_root()


def env_or_default(name: str, default: Any) -> Any:
    """``dg.EnvVar`` when the variable is set (read at run time, shown by name in the UI), else the default."""
    if not config.is_set(name):
        return default
    return dg.EnvVar.int(name) if isinstance(default, int) and not isinstance(default, bool) else dg.EnvVar(name)


def database_from_env(variables: DatabaseVariables, *, host: str | None, user: str, dbname: str) -> PostgresDatabase:
    """A database resource bound to ``variables``; ``host=None`` makes the host variable required."""
    return PostgresDatabase(
        host=dg.EnvVar(variables.host) if host is None else env_or_default(variables.host, host),
        port=env_or_default(variables.port, 5432),
        user=env_or_default(variables.user, user),
        dbname=env_or_default(variables.name, dbname),
        sslmode=env_or_default(variables.sslmode, ""),
        passfile=env_or_default(config.PASSFILE_ENV, ""),
        lock_timeout_seconds=env_or_default(config.LOCK_TIMEOUT_ENV, config.DEFAULT_LOCK_TIMEOUT_S),
        stall_timeout_seconds=env_or_default(config.STALL_TIMEOUT_ENV, config.DEFAULT_STALL_TIMEOUT_S),
        variables={"host": variables.host, "port": variables.port, "user": variables.user, "dbname": variables.name,
                   "sslmode": variables.sslmode, "passfile": config.PASSFILE_ENV},
    )


def supabase_database_from_env() -> PostgresDatabase:
    return database_from_env(SUPABASE_VARIABLES, host=None, user="postgres", dbname="postgres")


def vps_database_from_env() -> PostgresDatabase:
    return database_from_env(VPS_VARIABLES, host="localhost", user="postgres", dbname="wehub")


def backup_workspace_from_env() -> BackupWorkspace:
    return BackupWorkspace(
        backup_dir=env_or_default(config.BACKUP_DIR_ENV, config.DEFAULT_BACKUP_DIR),
        backup_log=env_or_default(config.BACKUP_LOG_ENV, config.DEFAULT_BACKUP_LOG),
        migration_log=env_or_default(config.MIGRATION_LOG_ENV, config.DEFAULT_MIGRATION_LOG),
        pg_bindirs=env_or_default(config.PG_BINDIRS_ENV, ""),
        runtime_dir=env_or_default(config.RUNTIME_DIR_ENV, ""),
        copy_engine=env_or_default(config.COPY_ENGINE_ENV, config.DEFAULT_COPY_ENGINE),
        copy_range_mb=env_or_default(config.COPY_RANGE_ENV, config.DEFAULT_COPY_RANGE_MB),
        backup_mode=env_or_default(config.BACKUP_MODE_ENV, config.DEFAULT_BACKUP_MODE),
        full_every_days=env_or_default(config.FULL_EVERY_DAYS_ENV, config.DEFAULT_FULL_EVERY_DAYS),
    )


class ArchiveStore(dg.ConfigurableResource):
    """Where the archives of verified copies live, how many are kept, and their off-site copy.

    No secret is among them: the off-site encryption key stays in rclone's config file, named by path.
    The values are checked by ``settings()`` when the archive step runs, so a wrong one costs the
    archive (alerted), not the backup.
    """

    directory: str = Field(description=f"Set by {config.ARCHIVE_DIR_ENV}; unset: {config.DEFAULT_ARCHIVE_DIR_NAME} "
                           f"beside {config.BACKUP_DIR_ENV}.")
    enabled: str = Field(default="on", description=f"Set by {config.ARCHIVE_ENABLED_ENV}: on, or off for no archives.")
    keep_daily: int = Field(default=config.ARCHIVE_KEEP_ENVS["daily"][1],
                            description=f"Set by {config.ARCHIVE_KEEP_ENVS['daily'][0]}: the newest archive of each "
                            "of the last N days is kept.")
    keep_weekly: int = Field(default=config.ARCHIVE_KEEP_ENVS["weekly"][1],
                             description=f"Set by {config.ARCHIVE_KEEP_ENVS['weekly'][0]}: the newest archive of "
                             "each of the last N ISO weeks is kept.")
    keep_monthly: int = Field(default=config.ARCHIVE_KEEP_ENVS["monthly"][1],
                              description=f"Set by {config.ARCHIVE_KEEP_ENVS['monthly'][0]}: the newest archive of "
                              "each of the last N months is kept.")
    min_free_mb: int = Field(default=config.DEFAULT_ARCHIVE_MIN_FREE_MB,
                             description=f"Set by {config.ARCHIVE_MIN_FREE_ENV}: older archives go while less is "
                             "free on the archive disk.")
    remote: str = Field(default="", description=f"Set by {config.ARCHIVE_REMOTE_ENV}; empty: no off-site copy. "
                        "An rclone crypt remote and a path (offsite:wehub).")
    rclone_config: str = Field(default="", description=f"Set by {config.ARCHIVE_RCLONE_CONFIG_ENV}; empty: "
                               "~/.config/rclone/rclone.conf (it holds the off-site key; mode 0600).")

    def settings(self) -> ArchiveSettings:
        """The checked values the archive steps take; ``SettingsError`` names the variable of a wrong one."""
        keep = {period: config.within_bounds(variable, getattr(self, f"keep_{period}"), 0, config.ARCHIVE_KEEP_MAX)
                for period, (variable, _) in config.ARCHIVE_KEEP_ENVS.items()}
        min_free_mb = config.within_bounds(config.ARCHIVE_MIN_FREE_ENV, self.min_free_mb, 0)
        for variable, value in ((config.ARCHIVE_DIR_ENV, self.directory), (config.ARCHIVE_REMOTE_ENV, self.remote),
                                (config.ARCHIVE_RCLONE_CONFIG_ENV, self.rclone_config)):
            config.refuse_control_characters(variable, value)
        if not self.directory.strip():
            raise SettingsError(f"{config.ARCHIVE_DIR_ENV} is empty: name the archive directory, or unset it")
        return ArchiveSettings(
            directory=Path(self.directory.strip()),
            enabled=config.on_or_off(config.ARCHIVE_ENABLED_ENV, self.enabled, True),
            keep_daily=keep["daily"], keep_weekly=keep["weekly"], keep_monthly=keep["monthly"],
            min_free_bytes=min_free_mb * 2**20,
            remote=self.remote.strip(),
            rclone_config=Path(self.rclone_config.strip()) if self.rclone_config.strip() else None,
        )


def archive_store_from_env() -> ArchiveStore:
    """``ArchiveStore`` bound to the ``WEHUB_ARCHIVE*`` variables that are set (shown by name in the UI).

    A variable set but empty keeps the default: the environment example lists them all, empty.
    """
    def bound(name: str, default: Any) -> Any:
        return env_or_default(name, default) if config.string_setting(name) else default

    return ArchiveStore(
        directory=bound(config.ARCHIVE_DIR_ENV, str(config.default_archive_dir())),
        enabled=bound(config.ARCHIVE_ENABLED_ENV, "on"),
        **{f"keep_{period}": bound(variable, default) for period, (variable, default) in config.ARCHIVE_KEEP_ENVS.items()},
        min_free_mb=bound(config.ARCHIVE_MIN_FREE_ENV, config.DEFAULT_ARCHIVE_MIN_FREE_MB),
        remote=bound(config.ARCHIVE_REMOTE_ENV, ""),
        rclone_config=bound(config.ARCHIVE_RCLONE_CONFIG_ENV, ""),
    )


def archive_settings_from_env() -> ArchiveSettings:
    """The archive settings as a run would resolve them now (the command line, the doctor)."""
    return archive_store_from_env().process_config_and_initialize().settings()


def _alert_variable(field: str, when_unset: str) -> str:
    return f"Set by {config.ALERT_STRING_VARIABLES[field]}; null (unset): {when_unset}."


class AlertSettings(dg.ConfigurableResource):
    """The alert channels as a resource, so the UI shows which are configured (by variable name)."""

    webhook_url: str | None = Field(default=None, description=_alert_variable("webhook_url", "no webhook"))
    smtp_host: str | None = Field(default=None, description=_alert_variable("smtp_host", "no e-mail"))
    smtp_port: int = Field(default=587, description=f"Set by {config.SMTP_PORT_ENV}.")
    smtp_user: str | None = Field(default=None, description=_alert_variable("smtp_user", "no SMTP login"))
    smtp_password: str | None = Field(default=None, description=_alert_variable("smtp_password", "no SMTP login"))
    smtp_starttls: bool = Field(default=True, description=f"Set by {config.SMTP_STARTTLS_ENV} (read when the "
                                "code location loads).")
    email_from: str | None = Field(default=None, description=_alert_variable("email_from",
                                                                             "wehub-backup@<smtp host>"))
    email_to: str | None = Field(default=None, description=_alert_variable("email_to", "no e-mail") +
                                 " Comma-separated.")
    dagster_url: str = Field(default=config.DEFAULT_DAGSTER_URL, description=f"Set by {config.DAGSTER_URL_ENV}; "
                             "the UI's address in alert links.")

    def channels(self) -> AlertChannels:
        """The resolved settings as the plain values delivery works with.

        E-mail needs a host and at least one recipient; ``email_to`` is comma-separated so one
        variable can name several people.
        """
        recipients = tuple(address.strip() for address in (self.email_to or "").split(",") if address.strip())
        smtp = SmtpServer(self.smtp_host, self.smtp_port, self.email_from or f"wehub-backup@{self.smtp_host}",
                          recipients, self.smtp_user, self.smtp_password, self.smtp_starttls)
        return AlertChannels(self.webhook_url, smtp if self.smtp_host and recipients else None, self.dagster_url)


def alert_settings_from_env() -> AlertSettings:
    """``AlertSettings`` bound to the ``WEHUB_ALERT_*`` variables that are set.

    Strings and the port are ``dg.EnvVar``s, so the UI shows variable names instead of the
    webhook URL or password, and values are read when the sensor runs. Dagster has no boolean
    ``EnvVar``, so STARTTLS is read here; it is not a secret.
    """
    strings = {field: env_or_default(name, None) for field, name in config.ALERT_STRING_VARIABLES.items()}
    return AlertSettings(
        **strings,
        smtp_port=env_or_default(config.SMTP_PORT_ENV, 587),
        smtp_starttls=config.smtp_starttls(),
        dagster_url=env_or_default(config.DAGSTER_URL_ENV, config.DEFAULT_DAGSTER_URL),
    )


class InRunIOManager(dg.IOManager):
    """Hands each step's output to the next in memory, within the run that made it.

    A re-execution from a failed step would start from another run's outputs: the plan, the
    dump and its verification, whose snapshot, working files and lock ended with that run. Dagster
    refuses such a start with a traceback when the IO manager is ``mem_io_manager``; this one lets
    the run start and its first step refuse it in one line, before anything is changed.
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], Any] = {}

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        self._values[(context.step_key, context.name)] = obj

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        assert upstream is not None, "every input of the project's ops comes from an upstream step"
        key = (upstream.step_key, upstream.name)
        if key not in self._values:
            step = context.step_context.step.key
            raise reported_failure(NotResumable(
                f"a re-execution cannot start at {step}: its inputs died with run {upstream.run_id} (snapshot, "
                "working files, lock); re-execute all steps, or launch a new run"))
        return self._values[key]


@dg.io_manager(description="Step outputs in memory within their run; a re-execution from a failed step is "
               "refused in one line (its inputs ended with their run).")
def in_run_io_manager(_: dg.InitResourceContext) -> InRunIOManager:
    return InRunIOManager()
