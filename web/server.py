"""``hark api``: serve the Flask app with gunicorn (gthread workers), configured from the settings.

    hark api [--host HOST] [--port PORT] [--workers N] [--threads N]

Command-line options override HARK_API_HOST, HARK_API_PORT, HARK_API_WORKERS and HARK_API_THREADS.
SIGTERM / Ctrl-C stop gracefully: workers finish the requests they hold (up to 30 s).

An API that would listen beyond loopback without HARK_API_KEYS or HARK_API_KEYS_FILE refuses to start
(exit 2) unless authentication is switched off explicitly with HARK_AUTH=off, which is logged as a warning;
so does a malformed keys file (every bad line is named).
Before serving, the start-up check (:mod:`web.startup_check`) looks for this deployment's workers:
a wrong HARK_DEPLOYMENT or workers missing a language of HARK_EXPECT_LANGUAGES exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from hark import multiproc_metrics
from hark.gunicorn_app import GunicornApp
from hark.logs import start_component
from hark.settings import ConfigError, Settings
from web.gunicorn_conf import capacity, gunicorn_options
from web.startup_check import run_startup_check

log = logging.getLogger(__name__)


def build_api(settings: Settings) -> GunicornApp:
    """gunicorn running the Flask app, built in each worker process (no preload)."""

    def load_app() -> Any:
        from web.app import create_app

        return create_app(settings)

    return GunicornApp(load_app, gunicorn_options(settings))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hark api", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--host", help="address to bind (default HARK_API_HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to bind (default HARK_API_PORT, 7100)")
    parser.add_argument("--workers", type=int, help="gunicorn worker processes (default HARK_API_WORKERS)")
    parser.add_argument("--threads", type=int, help="threads per worker (default HARK_API_THREADS)")
    return parser


def check_auth(settings: Settings) -> bool:
    """Log the authentication mode; False (after logging why) when the API must not start.

    Args:
        settings: the API's settings, with the bind address it will use.

    Returns:
        True when the API may start.
    """
    try:
        settings.check_api_auth()
    except ConfigError as error:
        log.error("%s", error)
        return False
    if settings.auth == "off":
        log.warning("authentication is OFF (HARK_AUTH=off): anyone who can reach %s may use the API",
                    settings.api_host)  # fmt: skip
    elif not settings.auth_required:
        log.warning("authentication is off: no HARK_API_KEYS, so the API listens on loopback (%s) only",
                    settings.api_host)  # fmt: skip
    else:
        ring = settings.api_key_ring()  # validated by check_api_auth just above
        log.info("authentication is on: %d key(s) (%s)%s; /metrics %s", len(ring), ", ".join(ring.names) or "none",
                 f", keys file {settings.api_keys_file} re-read on change" if settings.api_keys_file else "",
                 "needs a key" if settings.metrics_auth == "key" else "is open (HARK_METRICS_AUTH=open)")
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the API until stopped; returns the process exit code."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    overrides = {name: value for name, value in (("api_host", args.host), ("api_port", args.port),
                                                  ("api_workers", args.workers), ("api_threads", args.threads))
                 if value is not None}  # fmt: skip
    settings = start_component("api", **overrides)
    if settings is None or not check_auth(settings) or not run_startup_check(settings):
        return 2
    options = gunicorn_options(settings)
    log.info("API of deployment %r on %s: %d worker(s) x %d threads = %d concurrent requests; sync wait %.0f s; "
             "upload limit %d bytes; auth %s", settings.deployment, options["bind"], settings.api_workers,
             settings.api_threads, capacity(settings), settings.sync_wait_seconds, settings.max_upload_bytes,
             "on" if settings.auth_required else "OFF")  # fmt: skip
    metrics_dir = multiproc_metrics.prepare("api")  # before gunicorn forks its workers
    try:
        return build_api(settings).serve()
    finally:
        multiproc_metrics.remove(metrics_dir)


if __name__ == "__main__":
    sys.exit(main())
