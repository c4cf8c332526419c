"""Connection, workspace and alert settings as Dagster resources, bound to environment variables.

Values are ``dg.EnvVar``s where a variable is set: read when a run starts, shown by name in the
UI. Passwords are not settings: they live only in the libpq password file (``PGPASSFILE``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from wehub_backup import config
from wehub_backup.alerts.delivery import AlertChannels, SmtpServer
from wehub_backup.config import SUPABASE_VARIABLES, VPS_VARIABLES, DatabaseVariables
from wehub_backup.errors import SettingsError
from wehub_backup.pg.connection import ConnectionInfo, is_local_host
from wehub_backup.pg.passfile import default_passfile


class PostgresDatabase(dg.ConfigurableResource):
    """A PostgreSQL database this project reads from or writes to (Supabase or the VPS)."""

    host: str = "localhost"
    port: int = 5432
    user: str
    dbname: str
    sslmode: str = ""
    passfile: str = ""
    lock_timeout_seconds: int = config.DEFAULT_LOCK_TIMEOUT_S
    stall_timeout_seconds: int = config.DEFAULT_STALL_TIMEOUT_S
    variables: dict[str, str] = {}

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

    backup_dir: str = config.DEFAULT_BACKUP_DIR
    backup_log: str = config.DEFAULT_BACKUP_LOG
    migration_log: str = config.DEFAULT_MIGRATION_LOG
    pg_bindirs: str = ""
    low_priority: bool = True
    runtime_dir: str = ""

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
    )


class AlertSettings(dg.ConfigurableResource):
    """The alert channels as a resource, so the UI shows which are configured (by variable name)."""

    webhook_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = True
    email_from: str | None = None
    email_to: str | None = None
    dagster_url: str = config.DEFAULT_DAGSTER_URL

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
