"""gunicorn configuration of the API tier, derived from :class:`~hark.settings.Settings`.

Submit-and-wait requests spend most of their life blocked on Redis, and an open live session
(WebSocket) holds its request thread for the session's life, so the API uses ``gthread`` workers
with many threads: ``HARK_API_WORKERS x HARK_API_THREADS`` requests and sessions can be open at once.
Size it at three times the deployment's slots: every slot may hold a live session, and REST
clients keep up to twice the slots waiting (running plus queued). The default 2 x 224 = 448 covers
one worker's 144 slots with three checkpoints (128 with one or two). A live session also has two
light threads of its own (the WebSocket reader of flask-sock's ``simple_websocket`` and the relay
of its results), which sleep on their sockets. gthread's ``timeout`` is a heartbeat of the worker's
main loop, not a per-request limit, so long waits and long sessions are safe. An event-loop worker
class (gevent) would hold sockets more cheaply, but Redis, Celery and the body-read deadline are
written for threads here; the streaming benchmark (bench/streaming.py) measures the thread model.
Logs (access log included) go through :mod:`hark.logs` in the same structured format as the rest of Hark.
Metrics use prometheus-client's multiprocess mode (:mod:`hark.multiproc_metrics`): the directory is
prepared before gunicorn forks and ``child_exit`` drops an exited worker's live gauges.

``hark api`` (``web.server``) uses :func:`gunicorn_options`; the file also works as
``gunicorn -c web/gunicorn_conf.py 'web.app:create_app()'``.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from gunicorn import glogging

from hark import multiproc_metrics
from hark.settings import Settings, get_settings
from web.keyring import ENVIRON_KEY_NAME

#: Seconds a stopping worker gets to finish the requests it holds.
GRACEFUL_TIMEOUT_SECONDS = 30
#: gthread heartbeat timeout (the main loop notifies even while request threads wait).
WORKER_TIMEOUT_SECONDS = 120
KEEPALIVE_SECONDS = 5
#: Paths logged at DEBUG only (probes hit them every few seconds).
QUIET_PATHS = ("/health", "/ready")
#: gunicorn creates its heartbeat files here with mkstemp (its docs recommend it in containers).
SHM_DIR = "/dev/shm"  # noqa: S108


class HarkGunicornLogger(glogging.Logger):
    """gunicorn's logger routed into the root handlers set by :func:`hark.logs.configure`."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
        self.access_log.setLevel(logging.NOTSET)  # follow the root level (HARK_LOG_LEVEL)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        """One line per request: method, path, status, duration, client, key name; tagged with the request id.

        The path is logged without its query string: a WebSocket upgrade may carry its key as ``?api_key=``.
        """
        request_id = None
        for name, value in resp.headers:
            if name.lower() == "x-request-id":
                request_id = value
                break
        status = str(resp.status).split(" ", 1)[0] if resp.status else "-"
        level = logging.DEBUG if req.path in QUIET_PATHS and status == "200" else logging.INFO
        client = environ.get("REMOTE_ADDR", "-")
        key_name = environ.get(ENVIRON_KEY_NAME)
        self.access_log.log(level, "%s %s %s %.1f ms client=%s%s", req.method, req.path, status,
                            request_time.total_seconds() * 1000, client, f" key={key_name}" if key_name else "",
                            extra={"request_id": request_id, "key_name": key_name})  # fmt: skip


def worker_exited(_server: Any, worker: Any) -> None:
    """gunicorn ``child_exit`` hook: drop the exited worker's live gauges from ``/metrics``."""
    multiproc_metrics.mark_dead(worker.pid)


def gunicorn_options(settings: Settings, host: str | None = None, port: int | None = None) -> dict[str, Any]:
    """gunicorn settings for the API of `settings.deployment`.

    Args:
        settings: the API's settings (workers, threads, bind address, log level).
        host: overrides ``settings.api_host``.
        port: overrides ``settings.api_port``.
    """
    threads = settings.api_threads
    options: dict[str, Any] = {
        "bind": f"{host or settings.api_host}:{port or settings.api_port}",
        "workers": settings.api_workers,
        "worker_class": "gthread",
        "threads": threads,
        # gthread keeps at most worker_connections - threads idle keep-alive connections.
        "worker_connections": max(1000, threads * 4),
        "timeout": WORKER_TIMEOUT_SECONDS,
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "keepalive": KEEPALIVE_SECONDS,
        "max_requests": 0,
        "preload_app": False,
        "proc_name": f"hark-api-{settings.deployment}",
        "logger_class": HarkGunicornLogger,
        "errorlog": "-",
        "accesslog": "-",
        "loglevel": settings.log_level.lower(),
        "child_exit": worker_exited,
    }
    if os.path.isdir(SHM_DIR):
        options["worker_tmp_dir"] = SHM_DIR  # heartbeat files off a possibly slow (container) disk
    return options


def capacity(settings: Settings) -> int:
    """How many requests the API can hold at once (waiting ones included)."""
    return settings.api_workers * settings.api_threads


if __name__ == "__config__":  # loaded by `gunicorn -c web/gunicorn_conf.py`
    from hark.logs import configure as _configure_logs

    _settings = get_settings()
    _configure_logs("api", _settings.deployment, _settings.log_level, _settings.log_format)
    _settings.check_api_auth()  # ConfigError stops gunicorn: no keys beyond loopback unless HARK_AUTH=off
    if multiproc_metrics.directory() is None:
        multiproc_metrics.prepare("api")  # before gunicorn forks: /metrics merges every worker
    globals().update(gunicorn_options(_settings))
