"""The plain-text run logs of the original plan.

Operators who know the shell scripts look in ``/var/log/supabase_backup.log`` for one
line per start, success and failure; Dagster's own event log has the details. A log this
creates is mode 0640 (``files.RUN_LOG_MODE``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from wehub_backup.files import RUN_LOG_MODE, open_private
from wehub_backup.run.workdir import ensure_parent

# Where a step's messages go: in an op, ``context.log.info`` (Dagster's event log); in a test or
# the benchmark, a list's ``append`` or ``print``.
Log = Callable[[str], None]


def append_log_line(log_path: Path, job: str, event: str, target: str, detail: str = "") -> None:
    """One timestamped line naming the job, the event and the target database.

    Characters that are not printable (newlines, NUL, a right-to-left override in a refused
    target name) are written as escapes: one run stays one line, and grep still reads the file.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{stamp} {job} {event.upper()} target={target}" + (f" {detail}" if detail else "")
    printable = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in line)
    ensure_parent(log_path)
    with open_private(log_path, RUN_LOG_MODE, append=True) as handle:
        handle.write((printable + "\n").encode("utf-8"))
