"""The Flask application factory of the API tier (flaskr-style: defaults, environment, test override).

The process-wide resources the views share live in :mod:`web.services` (``app.extensions["hark"]``);
blueprints take them from there, so this module is imported by nobody but the entry points.
Authentication is installed here once for the whole app (:func:`web.auth.install_auth`). The API
never imports the engine, torch or the ``workers`` package.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g

from hark.settings import Settings, get_settings
from web import console, health, jobs, metrics, openapi, stream, stt
from web.auth import install_auth
from web.errors import current_request_id, new_request_id, register_error_handlers
from web.license_gate import install_license_gate
from web.limits import install_client_limits
from web.services import make_services


def _start_request() -> None:
    g.request_id = new_request_id()
    g.started = time.monotonic()


def _finish_request(response: Response) -> Response:
    response.headers["X-Request-ID"] = current_request_id()
    return response


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API application.

    Args:
        settings: configuration to use; defaults to the process settings read from the environment
            (tests pass their own).

    Returns:
        The Flask app with the transcription, live, job, health, metrics, OpenAPI and console endpoints registered.
    """
    settings = settings or get_settings()
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_upload_bytes)
    app.json.sort_keys = False  # type: ignore[attr-defined]

    app.extensions["hark"] = make_services(settings)

    app.before_request(_start_request)
    metrics.install_metrics(app)  # before auth: refused requests are counted too
    install_auth(app)
    install_license_gate(app)  # after auth (refusals only for authenticated callers), before the limits
    install_client_limits(app)  # after auth: it counts per authenticated key
    app.after_request(_finish_request)
    register_error_handlers(app)

    app.register_blueprint(stt.bp)
    app.register_blueprint(stream.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(console.bp)
    return app
