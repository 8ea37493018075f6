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
The workers' :class:`Consumer` also retries a lost broker every 0.5-1 s rather than kombu's growing
2, 4, 6... s, so work resumes about a second after Redis is back.
"""

from __future__ import annotations

from typing import Any

import redis
from celery.worker.consumer import consumer as celery_consumer
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


#: Reconnection back-off of a worker's consumer after the broker went away: first retry after this, ...
RECONNECT_INTERVAL_START = 0.5
#: ... each retry waiting this much longer, ...
RECONNECT_INTERVAL_STEP = 0.5
#: ... never more than this (kombu's defaults are 2, 2 and 30 s).
RECONNECT_INTERVAL_MAX = 1.0


class Consumer(celery_consumer.Consumer):
    """Celery's consumer, reconnecting to a broker that came back within ~1 s instead of kombu's 2-4-6... s.

    kombu backs off 2 s, then 4 s, 6 s..., so a Redis restart of 3 s left the workers idle for 3 more
    seconds after Redis was back (every job queued meanwhile waited that long). A reconnection attempt
    is one TCP connect to Redis, so trying every 0.5-1 s costs nothing.
    """

    def ensure_connected(self, conn: Any) -> Any:
        plain = conn.ensure_connection

        def ensure_connection(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("interval_start", RECONNECT_INTERVAL_START)
            kwargs.setdefault("interval_step", RECONNECT_INTERVAL_STEP)
            kwargs.setdefault("interval_max", RECONNECT_INTERVAL_MAX)
            return plain(*args, **kwargs)

        conn.ensure_connection = ensure_connection
        return super().ensure_connected(conn)
