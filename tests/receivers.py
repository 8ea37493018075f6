"""Real webhook receivers on loopback for the tests: an HTTP server that records every call, and a
raw-socket server that trickles its answer one byte per second (a receiver holding a delivery).

Both run in a thread of the test process and listen on 127.0.0.x only.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Call:
    """One request a receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    """time.monotonic() when the request was read."""


@dataclass
class Receiver:
    """A recording HTTP server on `host` (port chosen by the system).

    Args of the behaviour: `status(n)` gives the answer to the n-th call (1-based); `delay` seconds
    pass before answering (a slow receiver).
    """

    host: str = "127.0.0.1"
    port: int = 0
    status: Callable[[int], int] = lambda _n: 200
    delay: float = 0.0
    tls: ssl.SSLContext | None = None
    """Serve https with this context; the SNI names clients sent are kept in `sni`."""
    calls: list[Call] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        box = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with box._cond:
                    box.calls.append(Call(self.command, self.path, dict(self.headers.items()), raw, time.monotonic()))
                    number = len(box.calls)
                    box._cond.notify_all()
                if box.delay:
                    time.sleep(box.delay)
                self.send_response(box.status(number))
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            do_POST = do_GET = _handle

            def log_message(self, *_args: object) -> None:
                pass

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            self.tls.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)  # type: ignore[assignment]
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def wait_calls(self, count: int, timeout: float) -> list[Call]:
        """The first `count` calls, waiting up to `timeout` seconds for them."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.calls) >= count, timeout=timeout)
            return list(self.calls)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class TrickleServer:
    """Accepts connections, reads the request, then sends a status line one byte per second.

    It never finishes the answer (for `max_seconds`), so only a total deadline on the client side
    ends the exchange. `held` records, per connection, how long the client stayed connected.
    """

    def __init__(self, host: str = "127.0.0.1", max_seconds: float = 60.0) -> None:
        self.max_seconds = max_seconds
        self.held: list[float] = []
        self.accepted = threading.Event()
        self._done = threading.Condition()
        self._sock = socket.create_server((host, 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.host = host
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def wait_closed(self, timeout: float) -> list[float]:
        """How long each finished connection was held, waiting up to `timeout` for the first."""
        with self._done:
            self._done.wait_for(lambda: bool(self.held), timeout=timeout)
            return list(self.held)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        started = time.monotonic()
        self.accepted.set()
        conn.settimeout(1.0)
        try:
            with contextlib.suppress(TimeoutError):
                conn.recv(65536)  # the request (headers and a small body come in one or two segments)
            answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000
            for byte in answer:
                if self._stop.is_set() or time.monotonic() - started > self.max_seconds:
                    break
                conn.sendall(bytes([byte]))
                try:
                    if conn.recv(65536) == b"":  # the client closed its side
                        break
                except TimeoutError:  # nothing to read for a second: the client is still waiting
                    pass
        except OSError:  # reset / broken pipe: the client closed
            pass
        finally:
            conn.close()
            with self._done:
                self.held.append(time.monotonic() - started)
                self._done.notify_all()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
