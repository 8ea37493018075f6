"""kombu's Redis transport for Hark's workers, surviving a Redis restart while jobs run.

When the broker connection drops (a Redis restart or failover) Celery collects the broken connection
and reconnects with a new one. Channels of the old connection are still used afterwards: closing one
asks kombu to put its unacknowledged messages back on their queues, and a job that finishes after the
reconnect acknowledges its message through the channel it came from. Both build a Redis client from
the old connection's parameters, which are gone (``AttributeError: 'NoneType' object has no attribute
'hostname'``). That is not a connection error, so Celery's handlers let it through and the worker
stops; the supervisor restarts the child, at the cost of a model load and the jobs it was running.

Here that case raises a Redis ``ConnectionError``, which Celery and kombu already treat as what it is:
the close skips the restore, the acknowledgement is logged as failed, and the worker keeps its
connection and its running jobs. Nothing is lost: the messages stay in the deployment's unacknowledged
set (kept by Redis' AOF), and one whose acknowledgement was lost comes back after the visibility
timeout, where the task finds its job answered and skips it.

Only the workers use this transport (``workers.celery_app``); the API sends tasks with kombu's own.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    """A Redis channel that reports a collected connection as a connection error."""

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection this channel belonged to is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
