"""The Flask application factory of the API tier (flaskr-style: defaults, environment, test override).

The app holds, in ``app.extensions["hark"]`` (see :func:`services`), the process-wide resources its
views share: the settings, one Redis client whose connection pool is sized for many requests
waiting on their jobs at once, the :class:`~hark.jobs.JobStore` and a Celery app used only to send
tasks by name. The API never imports the engine, torch or the ``workers`` package.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis
from celery import Celery
from flask import Flask, Response, current_app, g

from hark.broker import celery_settings
from hark.jobs import JobStore
from hark.settings import Settings, get_settings
from web.errors import current_request_id, new_request_id, register_error_handlers

log = logging.getLogger(__name__)

#: Connections beyond one per request thread (health checks, registry reads, Celery bookkeeping).
EXTRA_REDIS_CONNECTIONS = 20
#: Longest a request thread waits for a free Redis connection before answering 503.
REDIS_POOL_TIMEOUT_SECONDS = 20


@dataclass
class Services:
    """Resources shared by every request of one API process."""

    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    celery: Celery


def services() -> Services:
    """The :class:`Services` of the current app."""
    return current_app.extensions["hark"]


def make_redis(settings: Settings) -> redis.Redis:
    """A Redis client whose blocking pool has a connection for every request thread.

    Waiting requests hold a connection in BLPOP (in slices of at most 5 s), so the pool is sized
    ``api_threads + 20``; a thread that still finds it empty waits rather than failing at once.
    """
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.api_threads + EXTRA_REDIS_CONNECTIONS,
        timeout=REDIS_POOL_TIMEOUT_SECONDS,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=30,  # longer than any BLPOP slice of JobStore.wait
        socket_keepalive=True,
    )
    return redis.Redis(connection_pool=pool)


def make_celery(settings: Settings) -> Celery:
    """A Celery app that only sends tasks (by name) to this deployment's queues."""
    app = Celery("hark-api")
    app.config_from_object("celeryconfig")
    app.conf.update(celery_settings(settings))  # this deployment's broker keys, as the workers use them
    return app


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
        The Flask app with the transcription, job, health and OpenAPI endpoints registered.
    """
    settings = settings or get_settings()
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        HARK_API_KEYS=settings.api_key_list,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]

    client = make_redis(settings)
    app.extensions["hark"] = Services(
        settings=settings,
        redis=client,
        jobs=JobStore(client, settings.deployment, settings.result_ttl_seconds, settings.audio_ttl_seconds,
                      deadline=settings.job_deadline),
        celery=make_celery(settings),
    )

    app.before_request(_start_request)
    app.after_request(_finish_request)
    register_error_handlers(app)

    from web import health, jobs, openapi, stt

    app.register_blueprint(stt.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)

    if not settings.api_key_list:
        log.warning("authentication is OFF: HARK_API_KEYS is empty, anyone who can reach the API may use it; "
                    "set HARK_API_KEYS=key1,key2 to require 'Authorization: Bearer <key>'")  # fmt: skip
    return app
