"""What a contender costs: wall time, memory of its processes, temporary disk, bytes from the source.

Memory and disk are sampled from ``/proc`` and the file system while a contender runs.
Every process the benchmark starts is one of its children, so the sampler watches the
benchmark's own process tree: a direct child is a contender's main process (``pg_dump``,
``psql``, ``pgcopydb``, the ``wehub-backup`` command), anything below it is a child of
that main process (parallel workers, the job's ``pg_dump``/``pg_restore``).
"""

from __future__ import annotations

import os
import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path

from wehub_backup.run.workdir import directory_bytes

SAMPLE_SECONDS = 0.05


@dataclass
class ProcessPeaks:
    """High-water marks of the processes seen during one contender's run."""

    main_bytes: int = 0
    child_bytes: int = 0
    tree_bytes: int = 0  # largest sum of proportional set sizes at one moment
    largest_child: str = ""


@dataclass
class RunMeasurement:
    """One repetition of one contender."""

    contender: str
    repetition: int
    seconds: float
    peaks: ProcessPeaks
    temp_disk_bytes: int
    source_bytes: int
    details: dict[str, object] = field(default_factory=dict)


class Sampler:
    """Samples memory of the benchmark's descendant processes and the size of a directory."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._seen: dict[int, SeenProcess] = {}
        self.peaks = ProcessPeaks()
        self.disk_bytes = 0

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._summarize()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def _sample(self) -> None:
        tree_pss = 0
        for pid, is_main in descendants(os.getpid()):
            status = process_status(pid)
            if status is None:
                continue
            name, hwm = status
            seen = self._seen.get(pid)
            if seen is None or seen.name != name:
                # New, or it exec'd: what it held before was a copy of its parent's image.
                self._seen[pid] = SeenProcess(name, hwm, is_main)
                continue
            seen.hwm, seen.sightings = max(seen.hwm, hwm), seen.sightings + 1
            tree_pss += proportional_set_size(pid)
        self.peaks.tree_bytes = max(self.peaks.tree_bytes, tree_pss)
        try:
            self.disk_bytes = max(self.disk_bytes, directory_bytes(self._directory))
        except OSError:
            pass  # a file vanished mid-walk: the next sample counts again

    def _summarize(self) -> None:
        """Only processes seen twice under one name count: a fork caught before its exec is not a tool."""
        for seen in self._seen.values():
            if seen.sightings < 2:
                continue
            if seen.is_main:
                self.peaks.main_bytes = max(self.peaks.main_bytes, seen.hwm)
            elif seen.hwm > self.peaks.child_bytes:
                self.peaks.child_bytes, self.peaks.largest_child = seen.hwm, seen.name


@dataclass
class SeenProcess:
    """A process under one name (one program image), and its peak RSS so far."""

    name: str
    hwm: int
    is_main: bool
    sightings: int = 1


def descendants(root: int) -> list[tuple[int, bool]]:
    """Every process below ``root``, each marked True if it is a direct child."""
    found: list[tuple[int, bool]] = []
    frontier = [(pid, True) for pid in children(root)]
    while frontier:
        pid, is_main = frontier.pop()
        found.append((pid, is_main))
        frontier.extend((child, False) for child in children(pid))
    return found


def children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (a child is listed under the thread that forked it)."""
    result: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return result
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                result.extend(int(p) for p in handle.read().split())
        except OSError:
            continue
    return result


def process_status(pid: int) -> tuple[str, int] | None:
    """Name and peak RSS (VmHWM, bytes) of a process; None once it is gone."""
    fields: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("Name", "VmHWM"):
                    fields[key] = value.strip()
    except OSError:
        return None
    if "VmHWM" not in fields:
        return None  # a zombie: its memory is gone already
    return fields["Name"], _kib(fields["VmHWM"])


def proportional_set_size(pid: int) -> int:
    """Resident memory with shared pages split among their users, so forked workers are not counted twice."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return _kib(line.split(":", 1)[1].strip())
    except OSError:
        pass
    return 0


def _kib(value: str) -> int:
    return int(value.split()[0]) * 1024


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
