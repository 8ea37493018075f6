"""``hark_queue_depth{deployment,queue}``: messages waiting in a deployment's Celery queues, read at scrape time.

kombu's Redis transport keeps each queue as Redis lists named ``<global_keyprefix><queue>`` (priority 0)
and ``<global_keyprefix><queue>\\x06\\x16<priority>`` for the other priority steps (3, 6, 9); Hark sends
every task without a priority, but a message with one would sit in those lists, so all are summed. The
deployment's queues are one per checkpoint in its catalog (:func:`hark.registry.catalog`, live or
recently seen), its webhook queue and its default queue. One pipelined round trip per scrape, on a
client of its own whose socket timeout bounds the scrape: a slow or unreachable Redis makes the family
absent (and is logged), it never hangs ``/metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hark import registry
from hark.broker import queue_key
from hark.queues import default_queue, transcribe_queue, webhook_queue

log = logging.getLogger(__name__)

#: Longest a scrape waits for Redis (connect and each answer).
SCRAPE_TIMEOUT_SECONDS = 1.0


def redis_lists(deployment: str, queue: str) -> list[str]:
    """The Redis lists holding `queue`'s waiting messages, one per kombu priority step."""
    base = queue_key(deployment, queue)
    return [base if step == 0 else f"{base}{Channel.sep}{step}" for step in PRIORITY_STEPS]


def queue_depth(client: redis.Redis, deployment: str, queue: str) -> int:
    """Messages waiting in one queue of `deployment` (all priority lists), not counting those a worker holds."""
    pipe = client.pipeline(transaction=False)
    for name in redis_lists(deployment, queue):
        pipe.llen(name)
    return sum(int(length) for length in pipe.execute())


def deployment_queues(client: redis.Redis, deployment: str) -> list[str]:
    """The deployment's queues: one per catalogued checkpoint, then webhooks and default."""
    checkpoints = [transcribe_queue(deployment, c.name) for c in registry.catalog(client, deployment)]
    return [*checkpoints, webhook_queue(deployment), default_queue(deployment)]


def queue_depths(client: redis.Redis, deployment: str) -> dict[str, int]:
    """Waiting messages per queue of `deployment` (all priority lists summed)."""
    queues = deployment_queues(client, deployment)
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for name in redis_lists(deployment, queue):
            pipe.llen(name)
    lengths = iter(pipe.execute())
    return {queue: sum(next(lengths) for _ in PRIORITY_STEPS) for queue in queues}


class QueueDepthCollector(Collector):
    """Reads the queue lengths of one deployment whenever the registry is collected."""

    def __init__(self, redis_url: str, deployment: str, timeout: float = SCRAPE_TIMEOUT_SECONDS) -> None:
        self.deployment = deployment
        self.client = redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           max_connections=4)  # fmt: skip

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            depths = queue_depths(self.client, self.deployment)
        except redis.RedisError as error:
            log.warning("queue depths not collected: Redis did not answer (%s: %s)", type(error).__name__, error)
            return
        family = GaugeMetricFamily("hark_queue_depth", "Messages waiting in the deployment's Celery queues "
                                   "(Redis list lengths, all priorities)", labels=["deployment", "queue"])  # fmt: skip
        for queue, depth in depths.items():
            family.add_metric([self.deployment, queue], depth)
        yield family

    def close(self) -> None:
        self.client.close()
