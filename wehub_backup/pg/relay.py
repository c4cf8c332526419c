"""A loopback TCP relay that counts the bytes crossing it.

Supabase bills egress by what leaves its servers, and a dump's file size says little
about that (compression, protocol overhead, retries). Every connection to the source
goes through this relay, so the figure recorded for a run is measured on the wire.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from wehub_backup.pg.connection import ConnectionInfo

_CHUNK = 256 * 1024
# The file in a run's working directory holding what the source has sent so far.
PROGRESS_FILE = "egress_bytes"
PROGRESS_SECONDS = 0.25


@dataclass
class TrafficCounters:
    received_from_server: int = 0
    sent_to_server: int = 0


class ByteCountingRelay:
    """Accepts connections on 127.0.0.1 and relays each to ``upstream``, counting both directions."""

    def __init__(self, upstream_host: str, upstream_port: int, connect_timeout: float = 15.0) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._connect_timeout = connect_timeout
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = threading.Event()
        self.counters = TrafficCounters()
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name="relay-accept", daemon=True)

    def __enter__(self) -> ByteCountingRelay:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting and cut every relayed connection."""
        self._closed.set()
        # shutdown() wakes a thread blocked in accept() or recv() on the socket; close() alone does not.
        _shutdown_quietly(self._listener)
        _close_quietly(self._listener)
        if self._acceptor.is_alive() and self._acceptor is not threading.current_thread():
            self._acceptor.join()
        with self._lock:
            for sock in list(self._sockets):
                _shutdown_quietly(sock)
                _close_quietly(sock)
            self._sockets.clear()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="relay-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self._upstream, timeout=self._connect_timeout)
        except OSError:
            _close_quietly(client)
            return
        server.settimeout(None)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets.update((client, server))
        upstream = threading.Thread(target=self._pump, args=(client, server, "sent_to_server"), daemon=True)
        upstream.start()
        self._pump(server, client, "received_from_server")
        upstream.join()
        with self._lock:
            self._sockets.difference_update((client, server))

    def _pump(self, source: socket.socket, sink: socket.socket, counter: str) -> None:
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        try:
            while True:
                size = source.recv_into(buffer)
                if not size:
                    break
                sink.sendall(view[:size])
                with self._lock:
                    setattr(self.counters, counter, getattr(self.counters, counter) + size)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _shutdown_quietly(sock)
            _close_quietly(sink)


@contextmanager
def counted_connection(info: ConnectionInfo,
                       progress_dir: Path | None = None) -> Iterator[tuple[ConnectionInfo, TrafficCounters]]:
    """``info`` routed through a byte-counting relay, with the relay's counters; with
    ``progress_dir``, the bytes received so far are kept in its ``PROGRESS_FILE`` as they grow."""
    with ByteCountingRelay(info.hostaddr or info.host, info.lookup_port or info.port) as relay, \
            _progress_recorded(relay.counters, progress_dir):
        yield info.via_relay(relay.port), relay.counters


@contextmanager
def _progress_recorded(counters: TrafficCounters, directory: Path | None) -> Iterator[None]:
    """Write ``received_from_server`` to ``directory`` every ``PROGRESS_SECONDS`` and at the end.

    A run killed outright (SIGKILL, out of memory) reports nothing, but Supabase sent what it
    sent: the next run reads the figure from the dead run's directory and records it.
    """
    if directory is None:
        yield
        return
    done = threading.Event()

    def record() -> None:
        while not done.wait(PROGRESS_SECONDS):
            write_progress(directory, counters.received_from_server)

    writer = threading.Thread(target=record, name="egress-progress", daemon=True)
    writer.start()
    try:
        yield
    finally:
        done.set()
        writer.join()
        write_progress(directory, counters.received_from_server)


def write_progress(directory: Path, received: int) -> None:
    """Replace the figure at once (write, then rename): a kill never leaves half a number.

    Best effort: a full disk must not turn the dump's own error into this one.
    """
    partial = directory / f".{PROGRESS_FILE}"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(str(received))
        partial.replace(directory / PROGRESS_FILE)
    except OSError:
        pass


def read_progress(directory: Path) -> int:
    """The bytes a run's dump had received when its figure was last written; 0 if none was."""
    try:
        return int((directory / PROGRESS_FILE).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return 0


def _shutdown_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
