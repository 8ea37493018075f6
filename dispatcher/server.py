"""``hark dispatcher``: serve the dispatcher with gunicorn (gthread), the map read from HARK_ROUTES.

    hark dispatcher [--routes FILE] [--host HOST] [--port PORT] [--threads N]

Options override HARK_ROUTES, HARK_DISPATCHER_HOST (0.0.0.0), HARK_DISPATCHER_PORT (7000) and
HARK_DISPATCHER_THREADS. One process: the job-id memory (:mod:`dispatcher.jobs`) lives in it, and a
thread per request is what the work needs (it waits on the network). An invalid or missing map stops
it with exit status 2 and the entry to fix. The dispatcher does not check API keys: it passes
``Authorization`` through and each deployment checks it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from dispatcher.app import Dispatcher
from dispatcher.upstream import Upstreams
from hark.gunicorn_app import GunicornApp
from hark.logs import start_component
from hark.route_map import RouteMap, RouteMapError
from hark.settings import Settings

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 5
GRACEFUL_TIMEOUT_SECONDS = 30


def build(settings: Settings, routes: RouteMap) -> Dispatcher:
    """The WSGI app for `routes` with a connection pool per replica sized to the threads."""
    urls = [url for deployment in routes.deployments for url in deployment.urls]
    upstreams = Upstreams(urls, pool_size=settings.dispatcher_threads,
                          read_timeout=settings.dispatcher_upstream_timeout_seconds)  # fmt: skip
    return Dispatcher(routes, upstreams)


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "bind": f"{settings.dispatcher_host}:{settings.dispatcher_port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": settings.dispatcher_threads,
        "worker_connections": max(1000, settings.dispatcher_threads * 4),
        "timeout": 120,  # gthread heartbeat, not a request limit
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "keepalive": KEEPALIVE_SECONDS,
        "proc_name": "hark-dispatcher",
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hark dispatcher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--routes", type=Path, help="route map file, YAML or JSON (default HARK_ROUTES)")
    parser.add_argument("--host", help="address to bind (default HARK_DISPATCHER_HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to bind (default HARK_DISPATCHER_PORT, 7000)")
    parser.add_argument("--threads", type=int, help="request threads (default HARK_DISPATCHER_THREADS)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    overrides = {name: value for name, value in (("routes_file", args.routes), ("dispatcher_host", args.host),
                                                  ("dispatcher_port", args.port), ("dispatcher_threads", args.threads))
                 if value is not None}  # fmt: skip
    settings = start_component("dispatcher", **overrides)
    if settings is None:
        return 2
    if settings.routes_file is None:
        log.error("no route map: set HARK_ROUTES=/path/to/routes.yaml (or pass --routes)")
        return 2
    try:
        routes = RouteMap.from_file(settings.routes_file)
    except RouteMapError as error:
        log.error("invalid route map: %s", error)
        return 2
    for language, deployment in sorted(routes.routes.items()):
        log.info("route %s -> %s", language, ", ".join(deployment.urls))
    if routes.fallback is not None:
        log.info("route * (fallback) -> %s", ", ".join(routes.fallback.urls))
    log.info("dispatcher on %s:%d: %d language(s) to %d deployment(s), %d threads", settings.dispatcher_host,
             settings.dispatcher_port, len(routes.routes), len(routes.deployments),
             settings.dispatcher_threads)  # fmt: skip
    app = build(settings, routes)
    return GunicornApp(lambda: app, gunicorn_options(settings)).serve()


if __name__ == "__main__":
    sys.exit(main())
