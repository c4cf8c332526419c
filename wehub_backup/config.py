"""Every environment variable the project reads, read and validated in one place.

The variable names are the ones the original shell scripts used (``SUPABASE_DB_*``,
``LOCAL_DB_*``), so an operator who knows the plan recognises them. A typo in a value is an
error that names the variable, never a silent default. The resources, the command line, the
doctor, the schedule and the sensors all read from here; the resources bind their fields to
the variables named here, so Dagster reads them when a run starts.
"""

from __future__ import annotations

import os
import unicodedata
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

from wehub_backup.errors import SettingsError


class DatabaseVariables(NamedTuple):
    """The environment variables that place one database (the plan's names, greppable as written)."""

    host: str
    port: str
    user: str
    name: str
    sslmode: str


SUPABASE_VARIABLES = DatabaseVariables(
    "SUPABASE_DB_HOST", "SUPABASE_DB_PORT", "SUPABASE_DB_USER", "SUPABASE_DB_NAME", "SUPABASE_DB_SSLMODE")
VPS_VARIABLES = DatabaseVariables("LOCAL_DB_HOST", "LOCAL_DB_PORT", "LOCAL_DB_USER", "LOCAL_DB_NAME", "LOCAL_DB_SSLMODE")
PASSFILE_ENV = "PGPASSFILE"
BACKUP_DIR_ENV, DEFAULT_BACKUP_DIR = "WEHUB_BACKUP_DIR", "/opt/supabase_backups"
BACKUP_LOG_ENV, DEFAULT_BACKUP_LOG = "WEHUB_BACKUP_LOG", "/var/log/supabase_backup.log"
MIGRATION_LOG_ENV, DEFAULT_MIGRATION_LOG = "WEHUB_MIGRATION_LOG", "/var/log/supabase_migration.log"
PG_BINDIRS_ENV = "WEHUB_PG_BINDIRS"
# How long a session of a run waits for a lock another session holds, and how long a dump
# waits for a source that sends nothing on an open connection, before failing with the cause.
LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT_S = "WEHUB_LOCK_TIMEOUT_SECONDS", 300
STALL_TIMEOUT_ENV, DEFAULT_STALL_TIMEOUT_S = "WEHUB_STALL_TIMEOUT_SECONDS", 300
RUNTIME_DIR_ENV = "WEHUB_RUNTIME_DIR"
# How the backup carries rows: ``archive`` (pg_dump to a directory archive, then pg_restore) or
# ``stream`` (COPY from the held snapshot straight into staging), and the size above which a
# streamed table is copied in page ranges, each its own transaction.
COPY_ENGINE_ENV, DEFAULT_COPY_ENGINE = "WEHUB_BACKUP_COPY_ENGINE", "archive"
COPY_ENGINES = ("stream", "archive")
COPY_RANGE_ENV, DEFAULT_COPY_RANGE_MB = "WEHUB_BACKUP_COPY_RANGE_MB", 256
# A backup copies everything (``full``), or starts from the current verified copy and fetches only
# the chunks that changed (``incremental``, with the stream engine); an incremental run is full
# after this many days since the last full copy. The daily schedule runs incremental backups
# on the days the weekly full one does not run, unless it is turned off.
BACKUP_MODE_ENV, DEFAULT_BACKUP_MODE = "WEHUB_BACKUP_MODE", "full"
BACKUP_MODES = ("full", "incremental")
FULL_EVERY_DAYS_ENV, DEFAULT_FULL_EVERY_DAYS = "WEHUB_BACKUP_FULL_EVERY_DAYS", 7
DAILY_INCREMENTAL_ENV = "WEHUB_BACKUP_DAILY_INCREMENTAL"
TIMEZONE_ENV, DEFAULT_TIMEZONE = "WEHUB_SCHEDULE_TIMEZONE", "UTC"
TARGET_ENV = "WEHUB_BACKUP_TARGET_DB"
TESTING_TARGET = "wehub_backup_test"
PRODUCTION_TARGET = "wehub"
BUDGET_ENV, DEFAULT_BUDGET_BYTES = "WEHUB_EGRESS_BUDGET_BYTES", 5 * 10**9
CYCLE_DAY_ENV = "WEHUB_EGRESS_CYCLE_DAY"
MAX_AGE_ENV, DEFAULT_MAX_BACKUP_AGE = "WEHUB_BACKUP_MAX_AGE_HOURS", timedelta(days=8)
DAGSTER_URL_ENV, DEFAULT_DAGSTER_URL = "WEHUB_DAGSTER_URL", "http://localhost:3000"
DAGSTER_HOME_ENV = "DAGSTER_HOME"
DAGSTER_PG_VARIABLES = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_DB")
DEFAULT_DAGSTER_DATABASE = "dagster"
ALERT_STRING_VARIABLES = {
    "webhook_url": "WEHUB_ALERT_WEBHOOK_URL", "smtp_host": "WEHUB_ALERT_SMTP_HOST", "smtp_user": "WEHUB_ALERT_SMTP_USER",
    "smtp_password": "WEHUB_ALERT_SMTP_PASSWORD", "email_from": "WEHUB_ALERT_EMAIL_FROM",
    "email_to": "WEHUB_ALERT_EMAIL_TO",
}
SMTP_PORT_ENV = "WEHUB_ALERT_SMTP_PORT"
SMTP_STARTTLS_ENV = "WEHUB_ALERT_SMTP_STARTTLS"
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})
# Line and paragraph breaks, control and format characters, and the surrogates that stand for
# bytes the environment held that are not UTF-8.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED_CONTROLS = {"\n": "a line feed (\\n)", "\r": "a carriage return (\\r)", "\t": "a tab (\\t)"}


def is_set(name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the variable is present (a resource field binds to it, or keeps its default)."""
    return name in environ


def refuse_control_characters(variable: str, value: str) -> str:
    """``value``, unless it holds a line break or another control character.

    A stray newline pasted into an environment file would reach libpq inside a host, user or
    database name; the server's reply then breaks at it, and the one-line error shows only
    what came before, pointing nowhere near the cause.
    """
    for position, char in enumerate(value, start=1):
        if unicodedata.category(char) in _CONTROL_CATEGORIES:
            raise SettingsError(
                f"{variable} holds {_describe_character(char)} at character {position} of {value!r}: "
                "set it without line breaks or control characters"
            )
    return value


def _describe_character(char: str) -> str:
    if char in _NAMED_CONTROLS:
        return _NAMED_CONTROLS[char]
    if 0xDC80 <= ord(char) <= 0xDCFF:  # how Python decodes a byte of the environment that is not UTF-8
        return f"a byte that is not UTF-8 (0x{ord(char) - 0xDC00:02x})"
    name = unicodedata.name(char, "")
    return f"the control character U+{ord(char):04X}" + (f" ({name})" if name else "")


def copy_engine(configured: str, setting: str) -> str:
    """The engine a backup run uses: its op config's ``copy_engine`` if set, else the setting."""
    return _run_choice("copy_engine", configured, COPY_ENGINE_ENV, setting, COPY_ENGINES)


def backup_mode(configured: str, setting: str) -> str:
    """The mode a backup run asks for: its op config's ``mode`` if set, else the setting."""
    return _run_choice("mode", configured, BACKUP_MODE_ENV, setting, BACKUP_MODES)


def _run_choice(field: str, configured: str, variable: str, setting: str, choices: tuple[str, ...]) -> str:
    value, origin = (configured, f"{field} (the run's config)") if configured.strip() else (setting, variable)
    if value.strip() not in choices:
        allowed = " or ".join(f"'{choice}'" for choice in choices)
        raise SettingsError(f"{origin} must be {allowed}, not {value!r}; nothing was changed")
    return value.strip()


def string_setting(name: str, default: str = "", environ: Mapping[str, str] = os.environ) -> str:
    """A plain string setting, stripped; empty means the default."""
    return environ.get(name, "").strip() or default


def whole_number(name: str, default: int, low: int, high: int | None = None,
                 environ: Mapping[str, str] = os.environ) -> int:
    """An integer setting within [low, high]."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} must be a whole number {_bounds(low, high)}") from None
    return within_bounds(name, value, low, high)


def within_bounds(name: str, value: int, low: int, high: int | None = None) -> int:
    """``value`` if within [low, high]; else a ``SettingsError`` naming the variable it came from."""
    if value < low or (high is not None and value > high):
        raise SettingsError(f"{name}={str(value)!r} must be a whole number {_bounds(low, high)}")
    return value


def _bounds(low: int, high: int | None) -> str:
    return f"between {low} and {high}" if high is not None else f"at least {low}"


def flag(name: str, default: bool, environ: Mapping[str, str] = os.environ) -> bool:
    """An on/off setting; a typo is an error, not a silent ``False``."""
    return on_or_off(name, environ.get(name, ""), default)


def on_or_off(name: str, raw: str, default: bool) -> bool:
    """The word ``raw`` that variable ``name`` holds, as a flag; empty means the default."""
    word = raw.strip().lower()
    if not word:
        return default
    if word not in _TRUE_WORDS | _FALSE_WORDS:
        raise SettingsError(f"{name} must be one of {sorted(_TRUE_WORDS | _FALSE_WORDS)}, got {raw.strip()!r}")
    return word in _TRUE_WORDS


def hours(name: str, default: timedelta, environ: Mapping[str, str] = os.environ) -> timedelta:
    """A positive duration in hours (fractions allowed)."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise SettingsError(f"{name}={raw!r} must be a positive number of hours")
    return timedelta(hours=value)


def schedule_timezone(environ: Mapping[str, str] = os.environ) -> str:
    """The IANA zone the schedule's 02:00 is read in; a typo stops loading instead of silently running in UTC."""
    name = string_setting(TIMEZONE_ENV, DEFAULT_TIMEZONE, environ)
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"{TIMEZONE_ENV}={name!r} is not a time zone name; use an IANA name such as UTC or Europe/Berlin"
        ) from None
    return name


def configured_backup_target(environ: Mapping[str, str] = os.environ) -> str:
    """The VPS database scheduled backups write into: the testing copy until production is switched on."""
    return string_setting(TARGET_ENV, TESTING_TARGET, environ)


def max_backup_age(environ: Mapping[str, str] = os.environ) -> timedelta:
    """The longest gap between successful backups before alerting: a weekly schedule plus a day."""
    return hours(MAX_AGE_ENV, DEFAULT_MAX_BACKUP_AGE, environ)


@dataclass(frozen=True)
class EgressSettings:
    """The budget in bytes and the day of the month on which Supabase starts a new billing cycle."""

    budget_bytes: int = DEFAULT_BUDGET_BYTES
    cycle_day: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> EgressSettings:
        """Read the settings when they are needed, so a changed environment applies to the next run."""
        return cls(
            budget_bytes=whole_number(BUDGET_ENV, DEFAULT_BUDGET_BYTES, 1, None, environ),
            cycle_day=whole_number(CYCLE_DAY_ENV, 1, 1, 31, environ),
        )


def smtp_starttls(environ: Mapping[str, str] = os.environ) -> bool:
    """STARTTLS before any SMTP login, on unless switched off (Dagster has no boolean ``EnvVar``)."""
    return flag(SMTP_STARTTLS_ENV, True, environ)


def dagster_url(environ: Mapping[str, str] = os.environ) -> str:
    """Where the Dagster UI is, for links in alerts and the command line's summary."""
    return string_setting(DAGSTER_URL_ENV, DEFAULT_DAGSTER_URL, environ)


def dagster_home(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The Dagster instance's directory, with its dagster.yaml; None when unset."""
    home = string_setting(DAGSTER_HOME_ENV, "", environ)
    return Path(home) if home else None


# What a client program (pg_dump, pg_restore, psql) may see of this process's environment:
# where programs and the home directory are (``~/.postgresql`` holds TLS root certificates),
# the locale and time zone, and the operator's TLS settings. Nothing else: this process also
# holds the alert channels' secrets, Dagster's and Supabase's settings.
_CHILD_VARIABLES = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ"})
_CHILD_PREFIXES = ("LC_", "PGSSL")


def child_environment(settings: Mapping[str, str] | None = None,
                      environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """A client program's whole environment: the allowed variables of this process, then ``settings``."""
    env = {name: value for name, value in environ.items() if name in _CHILD_VARIABLES or name.startswith(_CHILD_PREFIXES)}
    env.update(settings or {})
    return env
def default_runtime_root(environ: Mapping[str, str] = os.environ) -> Path:
    """Where runs keep the private password files their child processes read, unless
    ``WEHUB_RUNTIME_DIR`` says: a memory file system of this user's, ``$XDG_RUNTIME_DIR``, else
    ``/dev/shm``. The files never reach a disk, and a reboot clears them."""
    if environ.get("XDG_RUNTIME_DIR"):
        return Path(environ["XDG_RUNTIME_DIR"]) / "wehub-backup"
    return Path("/dev/shm") / f"wehub-backup-{os.getuid()}"


def pg_bindirs(environ: Mapping[str, str] = os.environ) -> list[Path]:
    """Directories named to hold PostgreSQL client programs, searched before the system's."""
    return [Path(entry) for entry in environ.get(PG_BINDIRS_ENV, "").split(":") if entry]


@dataclass(frozen=True)
class DagsterStorage:
    """Dagster's PostgreSQL storage as dagster-postgres builds its connection from ``DAGSTER_PG_*``."""

    host: str
    port: int
    user: str
    dbname: str

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"


def dagster_storage_from_env(environ: Mapping[str, str] = os.environ) -> DagsterStorage | None:
    """The storage settings if any ``DAGSTER_PG_*`` is set (all four are then required)."""
    if not any(environ.get(name) for name in DAGSTER_PG_VARIABLES):
        return None
    missing = [name for name in DAGSTER_PG_VARIABLES if not environ.get(name)]
    if missing:
        raise SettingsError(f"{', '.join(missing)} not set (set all of {', '.join(DAGSTER_PG_VARIABLES)} or none)")
    port = whole_number("DAGSTER_PG_PORT", 5432, 1, 65535, environ)
    return DagsterStorage(environ["DAGSTER_PG_HOST"], port, environ["DAGSTER_PG_USER"], environ["DAGSTER_PG_DB"])


def dagster_storage_database(environ: Mapping[str, str] = os.environ) -> str:
    """The database Dagster keeps its own runs in, which a backup must never replace."""
    return string_setting("DAGSTER_PG_DB", DEFAULT_DAGSTER_DATABASE, environ)


ARCHIVE_DIR_ENV, DEFAULT_ARCHIVE_DIR_NAME = "WEHUB_ARCHIVE_DIR", "supabase_archives"
ARCHIVE_KEEP_ENVS = {"daily": ("WEHUB_ARCHIVE_KEEP_DAILY", 7), "weekly": ("WEHUB_ARCHIVE_KEEP_WEEKLY", 4),
                     "monthly": ("WEHUB_ARCHIVE_KEEP_MONTHLY", 6)}
ARCHIVE_MIN_FREE_ENV, DEFAULT_ARCHIVE_MIN_FREE_MB = "WEHUB_ARCHIVE_MIN_FREE_MB", 1024
ARCHIVE_ENABLED_ENV = "WEHUB_ARCHIVE"
ARCHIVE_REMOTE_ENV = "WEHUB_ARCHIVE_REMOTE"
ARCHIVE_RCLONE_CONFIG_ENV = "WEHUB_ARCHIVE_RCLONE_CONFIG"


ARCHIVE_KEEP_MAX = 1000


@dataclass(frozen=True)
class ArchiveSettings:
    """Where the history of verified copies lives, how much of it is kept, and where it is copied off the VPS.

    What the ``archives`` resource (``defs/resources.py``) resolves to when a run starts, checked, for the
    archive steps, which know nothing of Dagster.
    """

    directory: Path
    enabled: bool = True
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 6
    min_free_bytes: int = DEFAULT_ARCHIVE_MIN_FREE_MB * 2**20
    remote: str = ""  # an rclone crypt remote and path (``offsite-crypt:wehub``); empty: no off-site copy
    rclone_config: Path | None = None  # rclone's config file; None: rclone's own default


def default_archive_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Beside the working directory (``/opt/supabase_archives`` by default): on the same disk the
    operator sized for backups, yet outside the directory whose stale run files each run sweeps."""
    backup_dir = Path(string_setting(BACKUP_DIR_ENV, DEFAULT_BACKUP_DIR, environ))
    return backup_dir.parent / DEFAULT_ARCHIVE_DIR_NAME
