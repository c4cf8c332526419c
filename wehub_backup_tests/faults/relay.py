"""A relay between a run and one of its PostgreSQL servers that a test can slow down or cut.

Slowing the wire stretches a phase (dump, restore) long enough to interrupt it at a chosen
moment; cutting it is what a source that drops connections looks like to the run.
"""

from __future__ import annotations

import socket
import threading
import time

from wehub_backup.pg.relay import ByteCountingRelay
from wehub_backup_tests.harness.cluster import LOOPBACK
from wehub_backup_tests.harness.held_back import HeldBackSocket

PACE_SLICE_SECONDS = 0.05


class FaultRelay(ByteCountingRelay):
    """A ``ByteCountingRelay`` to a loopback server whose forwarding can be paced, stopped, or cut.

    ``bytes_per_second`` applies to each relayed connection and direction; ``None`` forwards
    at full speed. ``close()`` cuts every connection and refuses new ones.
    """

    def __init__(self, upstream_port: int, bytes_per_second: float | None = None) -> None:
        super().__init__(LOOPBACK, upstream_port)
        self.bytes_per_second = bytes_per_second
        self.forwarding = threading.Event()
        self.forwarding.set()
        self._serving = threading.local()  # the connection the current thread relays: its client, its server port
        self._clients_by_server_port: dict[int, socket.socket] = {}  # the open connections'

    def stop_forwarding(self, for_seconds: float) -> None:
        """Hold every byte back for ``for_seconds``, connections open: a stalled source as a
        client sees it (the relay's kernel still acknowledges what arrives)."""
        self.forwarding.clear()
        timer = threading.Timer(for_seconds, self.forwarding.set)
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        self.forwarding.set()  # held-back pumps go on, and find their sockets cut
        super().close()

    def cut_connections(self) -> None:
        """Drop every relayed connection, as a restarting source or a failing network does;
        new connections are still accepted."""
        with self._lock:
            for sock in list(self._sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut_client_of(self, server_port: int) -> None:
        """Drop the one relayed connection whose server side is ``server_port`` (a backend's
        ``client_port``) on its client's side: what the server sent and the relay still paces is lost.
        A connection that has closed meanwhile is left as it is."""
        with self._lock:
            client = self._clients_by_server_port.get(server_port)
        if client is None:
            return
        try:
            client.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _serve(self, client: socket.socket) -> None:
        """Relay one connection, known by its server port (``cut_client_of``) until it closes."""
        self._serving.client, self._serving.server_port = client, None
        try:
            super()._serve(client)
        finally:
            with self._lock:
                self._clients_by_server_port.pop(self._serving.server_port, None)

    def _connect_upstream(self) -> socket.socket:
        server = super()._connect_upstream()
        if server.family == socket.AF_INET:
            self._serving.server_port = server.getsockname()[1]
            with self._lock:
                self._clients_by_server_port[self._serving.server_port] = self._serving.client
        return server

    def _pump(self, source: socket.socket, sink: socket.socket, counter: str) -> None:
        super()._pump(source, HeldBackSocket(sink, self._hold_back), counter)  # type: ignore[arg-type]

    def _hold_back(self, size: int) -> None:
        """Wait while forwarding is stopped, then for ``size`` bytes at the pace, in slices so a
        new pace takes effect at once: a block can wait seconds at a crawl, and a test that has
        seen what it waited for sets full speed and expects it."""
        self.forwarding.wait()
        left = float(size)
        while left > 0 and (pace := self.bytes_per_second):
            slice_bytes = min(left, pace * PACE_SLICE_SECONDS)
            time.sleep(slice_bytes / pace)
            left -= slice_bytes
