"""Dagster's services (webserver, daemon) started by the tests as child processes, stopped at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time


def stop_process_groups(*processes: subprocess.Popen, grace_seconds: float = 15.0) -> None:
    """SIGTERM each process's group (a daemon with its code server and run workers, a webserver)
    at once, so their shutdowns overlap; then SIGKILL what is left after ``grace_seconds``."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)
