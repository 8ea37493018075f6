"""The process-wide resources of the API tier, in a module of their own.

Blueprints import :func:`services` from here, never from :mod:`web.app` (which imports the
blueprints to register them): no import circle. The app holds, in ``app.extensions["hark"]``, the
settings, one Redis client whose connection pool is sized for many requests waiting on their jobs
at once, the :class:`~hark.jobs.JobStore` and a Celery app used only to send tasks by name. The API
never imports the engine, torch or the ``workers`` package.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from flask import current_app

from hark.broker import celery_settings
from hark.jobs import JobStore
from hark.queue_depth import QueueDepthCollector
from hark.sessions import SessionStore
from hark.settings import Settings

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
    sessions: SessionStore
    queue_depth: QueueDepthCollector
    """Reads the deployment's queue lengths for ``/metrics`` (a small client with a short timeout)."""


def services() -> Services:
    """The :class:`Services` of the current app."""
    return current_app.extensions["hark"]


def make_redis(settings: Settings) -> redis.Redis:
    """A Redis client whose blocking pool has a connection for every request thread.

    Waiting requests hold a connection in BLPOP (in slices of at most 5 s) and every open live session
    holds one for its result channel (pub/sub) besides the ones its thread borrows, so the pool is
    sized ``2 x api_threads + 20``; a thread that still finds it empty waits rather than failing at once.
    """
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=2 * settings.api_threads + EXTRA_REDIS_CONNECTIONS,
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


def make_services(settings: Settings) -> Services:
    """Build the shared resources of one API process from `settings`."""
    client = make_redis(settings)
    return Services(
        settings=settings,
        redis=client,
        jobs=JobStore(client, settings.deployment, settings.result_ttl_seconds, settings.audio_ttl_seconds,
                      audio_budget=settings.staged_audio_budget_bytes, deadline=settings.job_deadline),
        celery=make_celery(settings),
        sessions=SessionStore(client, settings.deployment, settings.stream_lease_seconds,
                              settings.stream_idle_timeout_seconds),
        queue_depth=QueueDepthCollector(settings.redis_url, settings.deployment),
    )
