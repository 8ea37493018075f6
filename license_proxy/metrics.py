"""Prometheus collector of the usage counters kept in Redis, read at scrape time.

``hark_usage_audio_seconds_total{deployment,language,key_name}`` is the all-time usage of every
deployment: the proxy holds no counter of its own, so a proxy restart or a second proxy replica reports
the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hark import usage

log = logging.getLogger(__name__)


class UsageCollector(Collector):
    """Yields the usage counter from ``hark:usage:total`` on each scrape."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def collect(self) -> Iterator[Metric]:
        audio = CounterMetricFamily("hark_usage_audio_seconds", "Audio seconds transcribed, by deployment, "
                                    "language and API key name (from Redis)",
                                    labels=["deployment", "language", "key_name"])  # fmt: skip
        up = GaugeMetricFamily("hark_usage_redis_up", "1 when the usage counters could be read from Redis")
        try:
            rows = usage.total_rows(self.redis)
        except redis.RedisError as error:
            log.warning("usage metrics: Redis is unreachable (%s)", type(error).__name__)
            up.add_metric([], 0)
            yield up
            return
        for row in rows:
            audio.add_metric([row.deployment, row.language, row.key_name], row.seconds)
        up.add_metric([], 1)
        yield audio
        yield up
