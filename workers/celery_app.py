"""The Celery application of the workers: JSON-only settings from :mod:`celeryconfig`, tasks named by
:mod:`hark.queues`. The API sends tasks by name and never imports this module."""

from __future__ import annotations

from celery import Celery

app = Celery("hark", include=["workers.tasks", "workers.webhooks", "workers.stream_task"])
app.config_from_object("celeryconfig")
# Survives a Redis restart with jobs running (see workers/broker_transport.py).
app.conf.broker_transport = "workers.broker_transport:Transport"
app.conf.worker_consumer = "workers.broker_transport:Consumer"  # reconnects within ~1 s of Redis coming back
