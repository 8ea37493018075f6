"""The worker host's HTTP endpoint: ``GET /metrics`` (Prometheus) and ``GET /health`` (liveness).

Served by the supervisor on ``HARK_WORKER_METRICS_HOST:HARK_WORKER_METRICS_PORT`` (default 0.0.0.0:9101)
with the standard library's WSGI server in a thread per request, as prometheus-client's own
``start_wsgi_server`` does; no Flask on the worker host. ``/metrics`` merges what the supervisor and
every child wrote (:mod:`hark.multiproc_metrics`). ``/health`` answers what the supervisor reports:
200 when its loop turns and every child is alive and announced, else 503 with the reason, in JSON;
Docker's healthcheck and Kubernetes' probes call it. Nothing else is served (JSON 404 / 405).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.exposition import ThreadingWSGIServer

from hark import multiproc_metrics

logger = logging.getLogger(__name__)

#: () -> (healthy, JSON body)
HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]
StartResponse = Callable[..., Any]


class _QuietHandler(WSGIRequestHandler):
    """No access log line per probe and scrape (they come every few seconds)."""

    def log_message(self, format: str, *args: Any) -> None:
        return


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store")])  # fmt: skip
    return [data]


def make_app(health: HealthCheck) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI application: ``/metrics`` and ``/health``."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if path not in ("/metrics", "/health"):
            return _json(start_response, "404 Not Found", {"error": f"no {path[:64]!r} here: GET /metrics or "
                                                                    "/health"})  # fmt: skip
        if method not in ("GET", "HEAD"):
            return _json(start_response, "405 Method Not Allowed", {"error": "only GET and HEAD"})
        if path == "/health":
            healthy, body = health()
            return _json(start_response, "200 OK" if healthy else "503 Service Unavailable", body)
        data = generate_latest(multiproc_metrics.scrape_registry())
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(data)))])
        return [data]

    return app


class MetricsServer:
    """The threaded HTTP server of one worker host."""

    def __init__(self, host: str, port: int, health: HealthCheck) -> None:
        """Bind at once (port 0: any free port).

        Raises:
            OSError: The address cannot be bound (in use, not local...).
        """
        self._server = make_server(host, port, make_app(health), ThreadingWSGIServer, handler_class=_QuietHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hark-metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
