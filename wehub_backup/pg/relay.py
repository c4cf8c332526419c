"""A loopback TCP relay that counts the bytes crossing it.

Supabase bills egress by what leaves its servers, and a dump's file size says little
about that (compression, protocol overhead, retries). Every connection to the source
goes through this relay, so the figure recorded for a run is measured on the wire.

The relay also notices a source that stops sending: a stopped backend or a proxy that no
longer forwards keeps its TCP connection open and acknowledged, so neither libpq nor TCP
keepalives ever give up; the relay's watchdog cuts the connections instead. It counts the
server's silence only while a connection waits for the server: always, for a client that
exists to run its queries (pg_dump, psql), as the relay cannot see where an answer ends (the
bytes may be TLS); for a session its owner lets rest between statements (``let_rest``), only
while the server has not answered bytes the client sent.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.threads import repeated_beside

_CHUNK = 256 * 1024
# The file in a run's working directory holding what the source has sent so far.
PROGRESS_FILE = "egress_bytes"
PROGRESS_SECONDS = 0.25


@dataclass
class TrafficCounters:
    received_from_server: int = 0
    sent_to_server: int = 0


@dataclass(eq=False)
class _Exchange:
    """One relayed connection as the stall watchdog sees it."""

    client_port: int  # the relayed client's own port, by which its owner names it (``let_rest``)
    opened_at: float
    unanswered_since: float | None = None  # the client's first bytes since the server last sent

    def waiting_since(self, may_rest: bool) -> float | None:
        """Since when the connection waits for the server; None while it rests."""
        return self.unanswered_since if may_rest else self.opened_at


class ByteCountingRelay:
    """Accepts connections on 127.0.0.1 and relays each to ``upstream``, counting both directions.

    ``upstream_host`` is a host name or address, or a server's socket directory. With
    ``stall_timeout``, every relayed connection is cut once the server has sent nothing on any
    of them for that many seconds while one waits for it, and ``stalled_for`` says so.
    """

    def __init__(self, upstream_host: str, upstream_port: int, connect_timeout: float = 15.0,
                 stall_timeout: float | None = None) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._connect_timeout = connect_timeout
        self._stall_timeout = stall_timeout
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._exchanges: dict[socket.socket, _Exchange] = {}  # by each of its two sockets
        self._resting_ports: set[int] = set()
        self._closed = threading.Event()
        self._last_received = time.monotonic()
        self.counters = TrafficCounters()
        self.stalled_for: float | None = None
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name="relay-accept", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="relay-watchdog", daemon=True)

    def __enter__(self) -> ByteCountingRelay:
        self._acceptor.start()
        if self._stall_timeout:
            self._watchdog.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting and cut every relayed connection."""
        self._closed.set()
        # shutdown() wakes a thread blocked in accept() or recv() on the socket; close() alone does not.
        _shutdown_quietly(self._listener)
        _close_quietly(self._listener)
        for thread in (self._acceptor, self._watchdog):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join()
        with self._lock:
            for sock in list(self._sockets):
                _shutdown_quietly(sock)
                _close_quietly(sock)
            self._sockets.clear()

    def let_rest(self, session: psycopg.Connection) -> None:
        """Let ``session`` (connected through this relay) sit idle between its statements: the
        server's silence counts on it only while a statement it sent is unanswered."""
        with socket.fromfd(session.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM) as sock:
            port = sock.getsockname()[1]
        with self._lock:
            self._resting_ports.add(port)

    def _watch(self) -> None:
        """Cut every connection once the server has been silent for the stall timeout towards one
        that waits for it."""
        assert self._stall_timeout
        while not self._closed.wait(min(1.0, self._stall_timeout / 4)):
            with self._lock:
                silence = self._silence()
                if silence is not None and silence >= self._stall_timeout:
                    self.stalled_for = self._stall_timeout
                    for sock in self._sockets:
                        _shutdown_quietly(sock)
                    return

    def _silence(self) -> float | None:
        """How long the server has sent nothing while a connection waited for it (None: none waits);
        under ``_lock``."""
        starts = [since for exchange in set(self._exchanges.values())
                  if (since := exchange.waiting_since(exchange.client_port in self._resting_ports)) is not None]
        if not starts:
            return None
        return time.monotonic() - max(self._last_received, min(starts))

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="relay-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.stalled_for:  # the server stalled: no new connection either
            _close_quietly(client)
            return
        try:
            client_port = client.getpeername()[1]
            server = self._connect_upstream()
        except OSError:
            _close_quietly(client)
            return
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets.update((client, server))
            self._last_received = time.monotonic()  # a new connection's silence counts from now
            self._exchanges[client] = self._exchanges[server] = _Exchange(client_port, self._last_received)
        upstream = threading.Thread(target=self._pump, args=(client, server, "sent_to_server"), daemon=True)
        upstream.start()
        self._pump(server, client, "received_from_server")
        upstream.join()
        with self._lock:
            self._sockets.difference_update((client, server))
            for sock in (client, server):
                self._exchanges.pop(sock, None)

    def _connect_upstream(self) -> socket.socket:
        host, port = self._upstream
        if host.startswith("/"):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.settimeout(self._connect_timeout)
            try:
                server.connect(os.path.join(host, f".s.PGSQL.{port}"))
            except OSError:
                _close_quietly(server)
                raise
        else:
            server = socket.create_connection(self._upstream, timeout=self._connect_timeout)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.settimeout(None)
        return server

    def _pump(self, source: socket.socket, sink: socket.socket, counter: str) -> None:
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        from_server = counter == "received_from_server"
        with self._lock:
            exchange = self._exchanges[source]
        try:
            while True:
                size = source.recv_into(buffer)
                if not size:
                    break
                with self._lock:
                    if from_server:
                        self._last_received, exchange.unanswered_since = time.monotonic(), None
                    elif exchange.unanswered_since is None:
                        exchange.unanswered_since = time.monotonic()
                sink.sendall(view[:size])
                with self._lock:
                    setattr(self.counters, counter, getattr(self.counters, counter) + size)
                    if from_server:  # a client slow to take the data is no silence of the server
                        self._last_received = time.monotonic()
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _shutdown_quietly(sock)
            _close_quietly(sink)


@contextmanager
def counted_connection(info: ConnectionInfo) -> Iterator[tuple[ConnectionInfo, TrafficCounters]]:
    """``info`` routed through a byte-counting relay, with the relay's counters."""
    with relayed_connection(info) as (relayed, relay):
        yield relayed, relay.counters


@contextmanager
def relayed_connection(info: ConnectionInfo, stall_timeout: float | None = None, progress_dir: Path | None = None
                       ) -> Iterator[tuple[ConnectionInfo, ByteCountingRelay]]:
    """``info`` routed through a byte-counting relay (watching for stalls with ``stall_timeout``), and the relay;
    with ``progress_dir``, the bytes received so far are kept in its ``PROGRESS_FILE`` as they grow."""
    with ByteCountingRelay(info.hostaddr or info.host, info.lookup_port or info.port,
                           stall_timeout=stall_timeout) as relay, _progress_recorded(relay.counters, progress_dir):
        yield info.via_relay(relay.port), relay


@contextmanager
def _progress_recorded(counters: TrafficCounters, directory: Path | None) -> Iterator[None]:
    """Write ``received_from_server`` to ``directory`` every ``PROGRESS_SECONDS`` and at the end.

    A run killed outright (SIGKILL, out of memory) reports nothing, but Supabase sent what it
    sent: the next run reads the figure from the dead run's directory and records it.
    """
    if directory is None:
        yield
        return
    def record() -> bool:
        write_progress(directory, counters.received_from_server)
        return True

    try:
        with repeated_beside(PROGRESS_SECONDS, record, "egress-progress"):
            yield
    finally:
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
