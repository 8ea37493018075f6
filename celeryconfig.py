"""Celery settings for every Hark worker and for the API tier that sends tasks.

JSON only (no pickle); late acknowledgement so a job whose worker dies is redelivered;
prefetch 1 so extra jobs wait in the queue, not in a worker's memory. Values that depend
on the environment (broker, per-deployment key prefix, visibility timeout) come from
:func:`hark.broker.celery_settings`, which the API's sending app applies too.
"""

from __future__ import annotations

from hark.broker import celery_settings
from hark.settings import get_settings

_deployment = celery_settings(get_settings())

broker_url = _deployment["broker_url"]
result_backend = _deployment["result_backend"]
broker_transport_options = _deployment["broker_transport_options"]
result_backend_transport_options = _deployment["result_backend_transport_options"]
task_default_queue = _deployment["task_default_queue"]
result_expires = _deployment["result_expires"]
broker_connection_retry_on_startup = True

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
event_serializer = "json"

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_track_started = False
task_create_missing_queues = True
worker_hijack_root_logger = False
worker_send_task_events = False
broker_pool_limit = 32
