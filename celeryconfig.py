"""Celery settings for every Hark worker and for the API tier that sends tasks.

JSON only (no pickle); late acknowledgement so a job whose worker dies is redelivered;
prefetch 1 so extra jobs wait in the queue, not in a worker's memory. Values that depend
on the environment come from :mod:`hark.settings`.
"""

from __future__ import annotations

from hark.settings import get_settings

_settings = get_settings()

broker_url = _settings.redis_url
result_backend = _settings.redis_url
broker_connection_retry_on_startup = True
broker_transport_options = {
    # Longer than the longest allowed job: a running job is never handed to a second worker.
    "visibility_timeout": _settings.broker_visibility_timeout,
    # Sweep for messages of dead workers (unacked past the visibility timeout) every few seconds;
    # kombu's default sweeps only every 10 x 10 s, far later than a short visibility timeout.
    "unacked_restore_interval": max(1, min(10, _settings.broker_visibility_timeout // 4)),
    "unacked_restore_throttle": 1,
    "socket_keepalive": True,
    "retry_on_timeout": True,
    "health_check_interval": 10,
}
result_backend_transport_options = {"retry_policy": {"timeout": 5.0}}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
event_serializer = "json"

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_track_started = False
result_expires = _settings.result_ttl_seconds
task_default_queue = f"hark.{_settings.deployment}.default"
task_create_missing_queues = True
worker_hijack_root_logger = False
worker_send_task_events = False
broker_pool_limit = 32
