"""The off-site copy of each archive, with rclone, encrypted before it leaves the VPS.

The remote must be an rclone ``crypt`` remote (over whatever the operator uses: S3, SFTP, B2,
...): rclone encrypts file contents and names on the VPS, with the key held in rclone's config
file, which must be private (it is passed by path, never its contents, and nothing of it is
logged). Each archive's state is kept beside it in ``offsite.json``; an upload that failed is
tried again by the next run, and ``rclone cryptcheck`` proves each upload against the local files.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from wehub_backup.alerts.classify import one_line
from wehub_backup.archive.store import OFFSITE_FILE, StoredArchive, write_offsite_state
from wehub_backup.config import ARCHIVE_RCLONE_CONFIG_ENV, ARCHIVE_REMOTE_ENV, ArchiveSettings, child_environment
from wehub_backup.errors import OffsiteUploadFailed, SettingsError, ToolError
from wehub_backup.pg.processes import run_tool

# rclone's own bounds on a remote that does not answer: connecting, and an idle transfer.
_RCLONE_BOUNDS = ["--contimeout=30s", "--timeout=300s", "--retries=2", "--low-level-retries=3"]


@dataclass(frozen=True)
class Offsite:
    """An rclone crypt remote (``name:path``) and the config file that defines it."""

    remote: str
    config: Path

    @classmethod
    def from_settings(cls, settings: ArchiveSettings) -> Offsite | None:
        if not settings.remote:
            return None
        if ":" not in settings.remote:
            raise SettingsError(f"{ARCHIVE_REMOTE_ENV}={settings.remote!r} must name an rclone remote and a path, "
                                "as remote:path")
        return cls(settings.remote, settings.rclone_config or Path.home() / ".config/rclone/rclone.conf")

    @property
    def remote_name(self) -> str:
        return self.remote.split(":", 1)[0]

    def path_of(self, archive_id: str) -> str:
        base = self.remote if self.remote.endswith(":") else self.remote.rstrip("/") + "/"
        return base + archive_id

    def rclone(self, *arguments: str, log: Callable[[str], None] | None = None) -> str:
        """Run rclone with this config file; its output, or ``ToolError`` in its own words."""
        handle, name = tempfile.mkstemp(prefix="wehub-rclone-")
        os.close(handle)
        output = Path(name)
        try:
            run_tool(["rclone", f"--config={self.config}", *arguments], child_environment(), log=log,
                     stdout_path=output)
            return output.read_text()
        finally:
            output.unlink(missing_ok=True)

    def require_encrypted(self) -> None:
        """Refuse a config file others can read, and a remote that is not rclone crypt."""
        try:
            mode = self.config.stat().st_mode
        except OSError as error:
            raise SettingsError(f"rclone config {self.config} ({ARCHIVE_RCLONE_CONFIG_ENV}): "
                                f"{error.strerror}") from None
        if stat.S_IMODE(mode) & 0o077:
            raise SettingsError(f"rclone config {self.config} holds the off-site encryption key and must be "
                                f"private: chmod 600 {self.config}")
        types = dict(line.split(":", 1) for line in self.rclone("listremotes", "--long").splitlines() if ":" in line)
        kind = types.get(self.remote_name, "").strip()
        if kind != "crypt":
            found = f"a {kind} remote" if kind else f"not defined in {self.config}"
            raise SettingsError(f"{ARCHIVE_REMOTE_ENV}: rclone remote {self.remote_name} is {found}; off-site "
                                "copies go through an rclone crypt remote, so they are encrypted before they "
                                "leave the VPS")


@dataclass(frozen=True)
class UploadOutcome:
    archive: str
    error: str | None = None


def needs_upload(archive: StoredArchive, offsite: Offsite) -> bool:
    return not (archive.offsite.get("state") == "uploaded" and archive.offsite.get("remote") == offsite.remote)


def upload_pending(archives: list[StoredArchive], offsite: Offsite, log: Callable[[str], None]) -> list[UploadOutcome]:
    """Upload, oldest first, every archive not yet on the remote (those that failed before too)."""
    outcomes = []
    for archive in archives:
        if needs_upload(archive, offsite):
            outcomes.append(upload(archive, offsite, log))
    return outcomes


def upload(archive: StoredArchive, offsite: Offsite, log: Callable[[str], None]) -> UploadOutcome:
    """Copy one archive to the remote and check it there; the outcome is kept beside the archive."""
    destination = offsite.path_of(archive.id)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        for command in ("copy", "cryptcheck"):
            offsite.rclone(command, str(archive.path), destination, f"--exclude={OFFSITE_FILE}", *_RCLONE_BOUNDS)
    except ToolError as error:
        cause = one_line(str(error))
        write_offsite_state(archive, {"state": "failed", "remote": offsite.remote, "at": stamp, "error": cause})
        log(f"archive {archive.id} was not copied to {offsite.remote}: {cause}; the next run tries again")
        return UploadOutcome(archive.id, cause)
    write_offsite_state(archive, {"state": "uploaded", "remote": offsite.remote, "at": stamp})
    log(f"archive {archive.id} copied to {destination} (encrypted) and checked there")
    return UploadOutcome(archive.id)


def remove_remote_copy(archive_id: str, offsite: Offsite, log: Callable[[str], None]) -> None:
    """The off-site copy of a pruned archive goes too; one that cannot be removed stays (logged)."""
    try:
        offsite.rclone("purge", offsite.path_of(archive_id), *_RCLONE_BOUNDS)
        log(f"removed the off-site copy of pruned archive {archive_id}")
    except ToolError as error:
        log(f"could not remove the off-site copy of pruned archive {archive_id}: {one_line(str(error))}")


def failed_uploads(outcomes: list[UploadOutcome]) -> OffsiteUploadFailed | None:
    failed = [outcome for outcome in outcomes if outcome.error]
    if not failed:
        return None
    return OffsiteUploadFailed(f"{len(failed)} archive(s) not copied off-site ({failed[0].archive}: "
                               f"{failed[0].error}); the next run tries again")
