"""The license proxy's Flask app: ``/v1/license``, ``/usage``, ``/health``, ``/metrics``.

Choice: a proxy whose ``LICENSE_KEY`` is missing, tampered or expired still starts (and logs the reason
at error level); every check then answers the precise refusal, so the operator also sees it in each
API's logs and errors (402 ``license_invalid`` / ``license_expired``) instead of a crash-looping proxy and
APIs that only know "unreachable".

``/usage`` needs ``Authorization: Bearer <HARK_LICENSE_PROXY_TOKEN>`` when that token is set; the other
endpoints are for the internal network the proxy sits on (APIs, Prometheus, probes).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.exceptions import HTTPException

from hark import usage
from hark.license import LicenseError, trusted_keys
from hark.settings import Settings
from license_proxy.checks import LicenseChecker
from license_proxy.metrics import UsageCollector

log = logging.getLogger(__name__)


def _error(status: int, message: str, code: str) -> Response:
    response = jsonify({"error": message, "request_id": "req_" + secrets.token_hex(12), "details": [{"code": code}]})
    response.status_code = status
    return response


def _token_ok(expected: str) -> bool:
    if not expected:
        return True
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


def create_app(settings: Settings, client: redis.Redis | None = None,
               clock: Callable[[], float] = time.time) -> Flask:  # fmt: skip
    """Build the proxy app.

    Args:
        settings: ``LICENSE_KEY``, ``HARK_LICENSE_PUBLIC_KEYS``, ``REDIS_URL``, ``HARK_LICENSE_PROXY_TOKEN``.
        client: Redis (default: from ``REDIS_URL``).
        clock: Unix time source (tests move it).
    """
    client = client or redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=5)
    checker = LicenseChecker(settings.license_key, trusted_keys(settings.license_public_key_list), client, clock)
    try:
        lic = checker.license()
        log.info("license of %r (key %s) valid until %s; deployments %s, languages %s, limits %s", lic.customer,
                 lic.key_id, lic.describe()["expires_at"], ",".join(lic.deployments), ",".join(lic.languages),
                 lic.limits)  # fmt: skip
    except LicenseError as error:
        log.error("the license is not usable (%s): %s; every check will answer this refusal", error.code, error)

    registry = CollectorRegistry()
    registry.register(UsageCollector(client))

    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["hark_license_checker"] = checker

    @app.get("/v1/license")
    def license_status() -> Response:
        deployment = request.args.get("deployment") or None
        if deployment is not None and len(deployment) > 64:
            return _error(400, "deployment names are at most 40 characters", "invalid_deployment")
        return jsonify(checker.check(deployment))

    @app.get("/usage")
    def usage_report() -> Response:
        if not _token_ok(settings.license_proxy_token):
            return _error(401, "send 'Authorization: Bearer <HARK_LICENSE_PROXY_TOKEN>'", "unauthorized")
        month = request.args.get("month") or None
        try:
            body: dict[str, Any] = usage.report(client, usage.check_month(month) if month else usage.month_of(clock()))
        except ValueError as error:
            return _error(400, str(error), "invalid_month")
        except redis.RedisError as error:
            return _error(503, f"usage is kept in Redis, which is unreachable ({type(error).__name__})",
                          "redis_unavailable")  # fmt: skip
        return jsonify(body)

    @app.get("/health")
    def health() -> Response:
        return jsonify({"status": "ok"})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return _error(error.code or 500, error.description or error.name, error.name.lower().replace(" ", "_"))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unexpected error on %s", request.path)
        return _error(500, "internal error", "internal_error")

    return app
