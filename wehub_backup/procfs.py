"""What Linux's ``/proc`` says about processes: their state, groups, trees and peak memory.

Operating-system plumbing, nothing of PostgreSQL: ``pg.processes`` waits on a stopped program's
group and measures its tree's memory with it, and the fault tests look for leftovers with it.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path


def process_stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name (which may hold spaces): state, ppid, pgrp, ...;
    None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def live_group_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are neither zombies nor dead."""
    pids = (int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit())
    return [pid for pid in pids
            if (fields := process_stat(pid)) and int(fields[2]) == pgid and fields[0] not in ("Z", "X")]


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants, from the kernel's list of each thread's children."""
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        for children in glob.glob(f"/proc/{pid}/task/*/children"):
            try:
                pending += [int(child) for child in Path(children).read_text().split()]
            except (OSError, ValueError):
                continue
    return found


def peak_rss(pid: int) -> int:
    """The process's own peak resident set (``VmHWM``) in bytes; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
