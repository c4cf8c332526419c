"""The project's own errors, each carrying the kind of failure it is.

Alerts, the command line and the run's failure line classify these by class: a refusal,
a verification that failed, a busy target. Only an error that carries the words of pg_dump,
psql, libpq or a server (its class has no ``category``) is classified by those words, in
``wehub_backup.alerts.classify``. Every message is one line an operator can act on.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class FailureCategory(enum.StrEnum):
    """What kind of failure a run met; decides what the operator checks first."""

    AUTHENTICATION = "authentication"
    NETWORK = "network"
    VERSION_MISMATCH = "version mismatch"
    PERMISSION_DENIED = "permission denied"
    MISSING_OBJECT = "missing object"
    VERIFICATION_MISMATCH = "verification mismatch"
    DISK_FULL = "disk full"
    TARGET_IN_USE = "target in use"
    FOREIGN_DATABASE = "not a wehub_backup copy"
    EGRESS_BUDGET = "egress budget"
    CONCURRENT_RUN = "concurrent run"
    INTERRUPTED = "interrupted"
    CONFIG = "config"
    STATEMENT_TIMEOUT = "statement timeout"
    LOCK_CONFLICT = "lock conflict"
    SOURCE_CHANGED = "source changed"
    REFUSED = "refused before any change"
    UNKNOWN = "unknown"


class WehubError(RuntimeError):
    """Base of every error this project raises on purpose.

    ``category`` is the kind of failure; None means the message quotes a tool or a server,
    whose words tell the kind.
    """

    category: FailureCategory | None = None


def first_of(problems: list[str]) -> str:
    """The first problem, and how many more there are: one line for the run's failure."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{problems[0]}{more}"


class PreflightError(WehubError):
    """Something is wrong before anything was changed; the message says what to fix."""


class SettingsError(PreflightError):
    """A setting (an environment variable, a run's config) is unusable."""

    category = FailureCategory.CONFIG


class InvalidTarget(SettingsError):
    """The configured target database name is refused before anything is touched."""


class MigrationRefused(PreflightError):
    """The preflight found problems; nothing was changed. ``problems`` names every one.

    The problems are of every kind (an object Supabase cannot take, a missing extension, disk
    space), so the category says what holds for all of them: nothing was changed.
    """

    category = FailureCategory.REFUSED

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"migration refused, nothing was changed: {first_of(problems)}")
        self.problems = problems


class NotSuperuser(PreflightError):
    """The VPS login lacks the superuser a copy's roles and owners need."""

    category = FailureCategory.PERMISSION_DENIED


class NotEnoughSpace(PreflightError):
    """The working directory has less free space than the run needs."""

    category = FailureCategory.DISK_FULL


class NotEnoughConnections(PreflightError):
    """A server has fewer free connection slots than the run's parallel jobs need."""

    category = FailureCategory.CONFIG


class EgressBudgetError(PreflightError):
    """A backup would take the cycle's egress over the budget; it is refused before changing anything."""

    category = FailureCategory.EGRESS_BUDGET


class NotResumable(SettingsError):
    """A re-execution would start at a step whose inputs (snapshot, working files, lock) ended with their run."""


class PasswordFileError(WehubError):
    """The password file is missing, unreadable, too widely readable, or lacks the login's line."""

    category = FailureCategory.AUTHENTICATION


class WorkspaceError(WehubError):
    """A working directory or log file cannot be created or written."""

    category = FailureCategory.CONFIG


class ConcurrentRun(WehubError):
    """Another run holds the target; this one changed nothing."""

    category = FailureCategory.CONCURRENT_RUN


class LockLost(ConcurrentRun):
    """The run's advisory lock went with its VPS session: another run may hold it now."""


class StagingReplaced(LockLost):
    """The staging database a copy writes to is no longer the one this run created: another run,
    which took the lock this run lost, dropped or replaced it."""


class RunInterrupted(WehubError):
    """A step stopped by SIGINT or SIGTERM (the message names the signal)."""

    category = FailureCategory.INTERRUPTED


class TargetBusy(WehubError):
    """Sessions kept a database the swap needs open."""

    category = FailureCategory.TARGET_IN_USE


class ForeignDatabase(PreflightError):
    """A database the backup would replace or drop is not the project's copy of this source."""

    category = FailureCategory.FOREIGN_DATABASE


class ToolError(WehubError):
    """A PostgreSQL client program failed; the message is its own telling error line."""


class VersionMismatch(ToolError):
    """No installed client is new enough for the server (or the archive)."""

    category = FailureCategory.VERSION_MISMATCH


class DumpFailed(WehubError):
    """The dump failed; what the source had sent by then still counts against the egress budget."""

    def __init__(self, message: str, egress_bytes: int) -> None:
        super().__init__(message)
        self.egress_bytes = egress_bytes


class SourceStalled(DumpFailed):
    """The source sent nothing on its open connections for the stall timeout; the dump was stopped."""

    category = FailureCategory.NETWORK


class SnapshotLost(DumpFailed):
    """The session holding the run's exported snapshot on the source went away during the copy."""

    category = FailureCategory.NETWORK


class LockConflict(WehubError):
    """Another session's lock kept the dump from a table: held past the lock timeout, or asked
    for while the dump held the table (the dump gave way rather than deadlock)."""

    category = FailureCategory.LOCK_CONFLICT


class SourceChanged(WehubError):
    """Tables changed after every snapshot in a way the snapshot cannot see (a rewrite, a drop)."""

    category = FailureCategory.SOURCE_CHANGED


class VerificationFailed(WehubError):
    """The restored copy differs from the source snapshot."""

    category = FailureCategory.VERIFICATION_MISMATCH


class ArchiveCorrupted(PreflightError):
    """An archive whose bytes no longer match its manifest's SHA-256: refused before anything changes."""

    category = FailureCategory.VERIFICATION_MISMATCH


class ArchiveError(WehubError):
    """An archive could not be made, listed or restored as asked (the message says why)."""


class OffsiteUploadFailed(WehubError):
    """An archive did not reach the off-site remote; the next run tries it again."""

    category = FailureCategory.NETWORK


def category_of(class_names: Iterable[str]) -> FailureCategory | None:
    """The category of the first of ``class_names`` (an error and its causes) that is one of ours and has one.

    Dagster keeps a failed step's exceptions as names and messages, so the class is looked up by name.
    """
    known = {cls.__name__: cls.category for cls in _all_subclasses(WehubError)}
    return next((category for name in class_names if (category := known.get(name)) is not None), None)


def _all_subclasses(cls: type) -> list[type]:
    return [cls] + [sub for child in cls.__subclasses__() for sub in _all_subclasses(child)]
