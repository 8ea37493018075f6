"""``hark license-proxy``: serve the license proxy with gunicorn.

    hark license-proxy [--host HOST] [--port PORT]

Reads ``LICENSE_KEY`` (the license), ``HARK_LICENSE_PUBLIC_KEYS`` (trusted vendor keys), ``REDIS_URL``
(usage counters) and ``HARK_LICENSE_PROXY_TOKEN`` (guards ``/usage``); binds ``HARK_LICENSE_PROXY_HOST``
(0.0.0.0) : ``HARK_LICENSE_PROXY_PORT`` (6699). A missing or refused license is logged and reported on
every check; the proxy still starts (see docs/licensing.md).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import Any

from hark.gunicorn_app import GunicornApp
from hark.logs import start_component
from hark.settings import Settings

#: One process, a few threads: checks are cheap and come every few minutes from each API process.
PROXY_THREADS = 8


def _load_app(settings: Settings) -> Any:
    from license_proxy.app import create_app

    return create_app(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hark license-proxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--host", help="address to bind (default HARK_LICENSE_PROXY_HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to bind (default HARK_LICENSE_PROXY_PORT, 6699)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    overrides = {k: v for k, v in (("license_proxy_host", args.host), ("license_proxy_port", args.port)) if v}
    settings = start_component("license-proxy", **overrides)
    if settings is None:
        return 2
    options = {"bind": f"{settings.license_proxy_host}:{settings.license_proxy_port}", "workers": 1,
               "worker_class": "gthread", "threads": PROXY_THREADS, "timeout": 30, "graceful_timeout": 5,
               "loglevel": settings.log_level.lower(), "accesslog": None}  # fmt: skip
    return GunicornApp(partial(_load_app, settings), options).serve()


if __name__ == "__main__":
    sys.exit(main())
