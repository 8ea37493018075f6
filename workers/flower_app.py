"""The Celery app to point Flower at: ``celery -A workers.flower_app flower`` (see docs/operations.md).

The same settings as the workers' app (:mod:`celeryconfig`: this deployment's broker, key prefix and JSON
serialisation) but kombu's own Redis transport: :mod:`workers.celery_app` names its transport class
(``workers.broker_transport:Transport``) and Flower derives the broker from the URL's scheme, so its
Broker page answers 404 with that app. Tasks are not imported: Flower only inspects workers, reads the
queue lengths and listens to task events. Nothing runs tasks with this app.
"""

from __future__ import annotations

from celery import Celery

app = Celery("hark")
app.config_from_object("celeryconfig")
