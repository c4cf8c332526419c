"""Real HTTP and SMTP servers on 127.0.0.1 that record what alerts deliver to them.

The webhook receiver can answer 500 a given number of times first, to prove retries; the SMTP
sink speaks enough of RFC 5321 (EHLO, AUTH PLAIN, MAIL, RCPT, DATA) for ``smtplib``.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

from wehub_backup_tests.harness.cluster import LOOPBACK


@contextlib.contextmanager
def _serving(server: socketserver.BaseServer) -> Iterator[None]:
    """Run ``server`` in a daemon thread for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class WebhookReceiver:
    """What a webhook endpoint saw: every request, and the JSON bodies it accepted."""

    url: str = ""
    failures_left: int = 0
    requests: int = 0
    payloads: list[dict] = field(default_factory=list)


@contextlib.contextmanager
def running_webhook_receiver(
    fail_first: int = 0, fail_status: int = 500
) -> Iterator[WebhookReceiver]:
    """An HTTP server that answers ``fail_status`` to the first ``fail_first`` POSTs, then 200."""
    receiver = WebhookReceiver(failures_left=fail_first)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                receiver.requests += 1
                failing = receiver.failures_left > 0
                receiver.failures_left -= failing
                if not failing:
                    receiver.payloads.append(json.loads(body))
            self.send_response(fail_status if failing else 200)
            self.end_headers()
            self.wfile.write(b"error" if failing else b"ok")

        def log_message(self, *args: object) -> None:
            """Keep test output clean."""

    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
    receiver.url = f"http://{LOOPBACK}:{server.server_address[1]}/hooks/T000/B000/secret-token"
    with _serving(server):
        yield receiver


@dataclass
class ReceivedMail:
    """One message as the SMTP server received it."""

    envelope_from: str
    envelope_to: list[str]
    login: tuple[str, str] | None
    message: EmailMessage


@dataclass
class SmtpSink:
    """The port of a running SMTP sink, the mails it accepted and the commands it was sent."""

    port: int = 0
    mails: list[ReceivedMail] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


@contextlib.contextmanager
def running_smtp_sink() -> Iterator[SmtpSink]:
    """A minimal SMTP server without STARTTLS that accepts AUTH PLAIN and stores every message."""
    sink = SmtpSink()

    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(f"{line}\r\n".encode())

        def handle(self) -> None:
            self.reply("220 loopback SMTP sink")
            envelope_from, envelope_to, login = "", [], None
            for raw in self.rfile:
                command = raw.decode().rstrip("\r\n")
                verb = command.split(" ", 1)[0].upper()
                sink.commands.append(verb)
                if verb == "EHLO":
                    self.reply("250-loopback")
                    self.reply("250 AUTH PLAIN")
                elif verb == "AUTH":
                    _, user, password = base64.b64decode(command.split()[2]).decode().split("\0")
                    login = (user, password)
                    self.reply("235 authenticated")
                elif verb == "MAIL":
                    envelope_from, envelope_to = command.split(":", 1)[1].strip(" <>"), []
                    self.reply("250 ok")
                elif verb == "RCPT":
                    envelope_to.append(command.split(":", 1)[1].strip(" <>"))
                    self.reply("250 ok")
                elif verb == "DATA":
                    self.reply("354 end with <CRLF>.<CRLF>")
                    sink.mails.append(
                        ReceivedMail(envelope_from, envelope_to, login, self.read_data())
                    )
                    self.reply("250 queued")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("502 not implemented")

        def read_data(self) -> EmailMessage:
            lines = []
            for raw in self.rfile:
                if raw in (b".\r\n", b".\n"):
                    break
                lines.append(raw[1:] if raw.startswith(b"..") else raw)
            return message_from_bytes(b"".join(lines), policy=policy.default)

    server = socketserver.ThreadingTCPServer((LOOPBACK, 0), Handler)
    server.daemon_threads = True
    sink.port = server.server_address[1]
    with _serving(server):
        yield sink
