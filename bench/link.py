"""A link of limited bandwidth between the source and everything that reads it.

The benchmark's servers share one machine, so a full copy's transfer costs next to nothing there;
an operator's VPS reaches Supabase over the internet. This relay holds the source's bytes back to
a rate shared by all its connections, as one link carries them, so the incremental runs can be
timed against a full one where the transfer is what it costs in service.
"""

from __future__ import annotations

import socket
import threading
import time

from wehub_backup.pg.relay import ByteCountingRelay
from wehub_backup_tests.harness.held_back import HeldBackSocket


class SharedLink:
    """The time the link is busy until: each send waits for its turn at ``bytes_per_second``."""

    def __init__(self, bytes_per_second: float) -> None:
        self.bytes_per_second = bytes_per_second
        self._lock = threading.Lock()
        self._free_at = time.monotonic()

    def carry(self, size: int) -> None:
        """Sleep until ``size`` more bytes have crossed the link after those before them."""
        with self._lock:
            start = max(self._free_at, time.monotonic())
            self._free_at = start + size / self.bytes_per_second
            done = self._free_at
        delay = done - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class LimitedLinkRelay(ByteCountingRelay):
    """A ``ByteCountingRelay`` whose bytes from the server cross one ``SharedLink``."""

    def __init__(self, upstream_host: str, upstream_port: int, megabits_per_second: float) -> None:
        super().__init__(upstream_host, upstream_port)
        self.link = SharedLink(megabits_per_second * 1e6 / 8)

    def _pump(self, source: socket.socket, sink: socket.socket, counter: str) -> None:
        if counter == "received_from_server":
            sink = HeldBackSocket(sink, self.link.carry)  # type: ignore[assignment]
        super()._pump(source, sink, counter)
