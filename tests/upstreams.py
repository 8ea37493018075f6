"""Tiny upstream HTTP servers for routing tests: each answers like a Hark API and says which one it is.

No model, no Redis: what the routing tests check is which upstream got the request, with which path,
query, headers and body. `POST` answers a valid Pulse transcript whose ``metadata.deployment`` is the
server's name; ``GET /ready`` lists the server's languages; ``GET /waves/v1/stt/jobs/<id>`` knows the
ids in :attr:`Upstream.jobs`. ``status`` forces an error status for every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    name: str
    languages: list[str] = field(default_factory=lambda: ["en"])
    status: int = 200
    jobs: set[str] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    server: ThreadingHTTPServer | None = None

    def answer(self, method: str, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        rid = "req_" + "0" * 23 + str(len(self.seen) % 10)
        if self.status != 200:
            return self.status, {"error": f"{self.name} says {self.status}", "request_id": rid,
                                 "details": [{"code": "forced"}]}  # fmt: skip
        if method == "GET" and path == "/ready":
            return 200, {"status": "ready", "deployment": self.name, "languages": self.languages}
        if method == "GET" and path.startswith("/waves/v1/stt/jobs/"):
            job = path.rsplit("/", 1)[1]
            if job in self.jobs:
                return 200, {"status": "processing", "request_id": job, "state": "queued", "deployment": self.name}
            return 404, {"error": f"no job {job!r}", "request_id": job, "details": []}
        if method == "POST":
            if "webhook_url" in query:
                return 200, {"status": "processing", "request_id": rid}
            return 200, {"status": "success", "transcription": f"hello from {self.name}",
                         "language": query.get("language", "en"), "request_id": rid,
                         "metadata": {"duration": 1.0, "fileSize": 10, "processing_time_ms": 1.0, "rtfx": 1.0,
                                      "deployment": self.name, "checkpoint": "fake@1"}}  # fmt: skip
        return 404, {"error": "not found", "request_id": rid, "details": []}


def _handler(upstream: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    chunk = self.rfile.read(size + 2)[:size]
                    if not size:
                        break
                    body += chunk
            else:
                body = self.rfile.read(length) if length else b""
            upstream.seen.append(Seen(self.command, parts.path, query, dict(self.headers.items()), body))
            status, payload = upstream.answer(self.command, parts.path, query)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Request-ID", payload.get("request_id", ""))
            self.send_header("X-Upstream", upstream.name)
            if status == 503:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

    return Handler


@contextmanager
def upstreams(*servers: Upstream) -> Iterator[tuple[Upstream, ...]]:
    """Serve each upstream on a free loopback port (``.url`` set) for the block."""
    threads = []
    try:
        for upstream in servers:
            upstream.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream))
            upstream.server.daemon_threads = True
            upstream.url = f"http://127.0.0.1:{upstream.server.server_address[1]}"
            thread = threading.Thread(target=upstream.server.serve_forever, kwargs={"poll_interval": 0.05},
                                      daemon=True)  # fmt: skip
            thread.start()
            threads.append(thread)
        yield servers
    finally:
        for upstream in servers:
            if upstream.server is not None:
                upstream.server.shutdown()
                upstream.server.server_close()


def refused_url() -> str:
    """A loopback URL nobody listens on (connection refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
