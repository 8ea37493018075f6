"""The Celery broker settings of one deployment, shared by the workers (:mod:`celeryconfig`) and the API.

Every key kombu writes in Redis (queues, bindings, and above all the ``unacked`` hash, its index and
its mutex) carries the deployment's prefix ``hark:<deployment>:broker:``. Without it the unacked set
is global: a deployment with a short visibility timeout would restore, and so run a second time,
another deployment's job that is still running. With it, deployments sharing one Redis database
never touch each other's messages, whatever their timeouts.
"""

from __future__ import annotations

from typing import Any

from hark.queues import default_queue, redis_key
from hark.settings import Settings


def broker_key_prefix(deployment: str) -> str:
    """The prefix of every broker key of `deployment`: ``hark:<deployment>:broker:``."""
    return redis_key(deployment, "broker") + ":"


def queue_key(deployment: str, queue: str) -> str:
    """The Redis list holding `queue`'s waiting messages (for ``LLEN`` in tools and tests)."""
    return broker_key_prefix(deployment) + queue


def transport_options(settings: Settings) -> dict[str, Any]:
    """kombu Redis transport options of `settings`' deployment.

    Args:
        settings: The process settings (deployment, visibility timeout).

    Returns:
        The ``broker_transport_options`` for Celery.
    """
    visibility = settings.broker_visibility_timeout
    return {
        "global_keyprefix": broker_key_prefix(settings.deployment),
        # Longer than the longest allowed job: a running job is never handed to a second worker.
        "visibility_timeout": visibility,
        # Sweep for messages of dead workers (unacked past the visibility timeout) every few seconds;
        # kombu's default sweeps only every 10 x 10 s, far later than a short visibility timeout.
        "unacked_restore_interval": max(1, min(10, visibility // 4)),
        "unacked_restore_throttle": 1,
        "socket_keepalive": True,
        "retry_on_timeout": True,
        "health_check_interval": 10,
    }


def celery_settings(settings: Settings) -> dict[str, Any]:
    """The Celery settings that depend on the deployment (broker, prefix, default queue).

    Both the workers' :mod:`celeryconfig` and the API's sending app apply these, so a task sent by
    the API lands in the very keys the workers consume.
    """
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "broker_transport_options": transport_options(settings),
        "result_backend_transport_options": {
            "global_keyprefix": broker_key_prefix(settings.deployment),
            "retry_policy": {"timeout": 5.0},
        },
        "task_default_queue": default_queue(settings.deployment),
        "result_expires": settings.result_ttl_seconds,
    }
