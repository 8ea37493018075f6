"""``GET /metrics``: Prometheus metrics of this deployment's API tier, merged across its gunicorn workers.

Requests are counted in one place, :func:`install_metrics`'s hooks, never in the views: a view only
notes the checkpoint and language it routed to (:func:`note_route`, stored in :data:`flask.g`), and the
after-request hook counts ``hark_requests_total{deployment,checkpoint,language,status}`` with them
(``none`` when the request was refused before routing, so user input never becomes a label value).
``hark_active_requests{deployment}`` counts requests in flight, open live sessions included (a
WebSocket view runs for the whole session). Probes, ``/metrics`` itself, the OpenAPI document and the
console's files are neither counted nor tracked. ``hark_queue_depth`` is read from Redis at scrape
time (:mod:`hark.queue_depth`). Audio seconds and the real-time factor come from the workers, which
see every job (async and live ones too): see :mod:`workers.metrics`.

Multiprocess mode (:mod:`hark.multiproc_metrics`): ``hark api`` prepares the directory before gunicorn
forks and marks exited workers dead, so any worker answers the scrape with the whole tier's numbers.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from hark import multiproc_metrics
from web.services import services

bp = Blueprint("metrics", __name__)

#: Endpoints that are neither counted nor tracked as in flight (probes, scrapes, static files).
UNCOUNTED_ENDPOINTS = frozenset({"health.health", "health.ready", "metrics.metrics", "openapi.openapi", "static",
                                 "console.page", "console.static"})  # fmt: skip
NONE = "none"

REQUESTS = Counter("hark_requests_total", "API requests by routed checkpoint, language and HTTP status code",
                   ["deployment", "checkpoint", "language", "status"])  # fmt: skip
ACTIVE = Gauge("hark_active_requests", "API requests in flight, open live (WebSocket) sessions included",
               ["deployment"], multiprocess_mode="livesum")  # fmt: skip


def note_route(checkpoint: str, language: str) -> None:
    """Record, for the request's metrics, the checkpoint (name) and language routing chose."""
    g.metrics_checkpoint = checkpoint
    g.metrics_language = language


def note_status(status: int) -> None:
    """Record the status to count when the response object does not carry it (a WebSocket: 101)."""
    g.metrics_status = status


def _counted() -> bool:
    return request.endpoint not in UNCOUNTED_ENDPOINTS


def _begin() -> None:
    if _counted():
        ACTIVE.labels(services().settings.deployment).inc()
        g.metrics_active = True


def _count(response: Response) -> Response:
    if _counted():
        status = g.get("metrics_status") or response.status_code
        REQUESTS.labels(services().settings.deployment, g.get("metrics_checkpoint", NONE),
                        g.get("metrics_language", NONE), str(status)).inc()  # fmt: skip
    return response


def _end(_error: BaseException | None) -> None:
    if g.pop("metrics_active", False):
        ACTIVE.labels(services().settings.deployment).dec()


def install_metrics(app: Flask) -> None:
    """Count and track every request of `app` (call it first: requests refused by later hooks count too)."""
    app.before_request(_begin)
    app.after_request(_count)
    app.teardown_request(_end)


@bp.get("/metrics")
def metrics() -> Response:
    """The Prometheus text exposition of the whole API tier (every gunicorn worker) plus queue depths."""
    registry = multiproc_metrics.scrape_registry([services().queue_depth])
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
