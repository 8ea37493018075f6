"""The API's ``/metrics``: requests counted once with their labels, the in-flight gauge, queue depths read from
real Redis lists, and a scrape that survives an unreachable Redis. Flask's test client on the real test Redis;
the test plays the worker (it completes the job with `JobStore`)."""

from __future__ import annotations

import time

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from hark.broker import queue_key
from hark.jobs import JobStore
from hark.queue_depth import QueueDepthCollector, queue_depths, redis_lists
from hark.queues import default_queue, transcribe_queue, webhook_queue
from tests.unit.web_helpers import AppFactory, Background, post, wait_for_job, wire_response


def scrape(client: FlaskClient) -> dict[tuple[str, frozenset], float]:
    """``/metrics`` as {(sample name, labels): value}."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.content_type.startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_requests_are_counted_once_with_their_labels_and_the_active_gauge_returns_to_zero(
        app: Flask, live: None, redis_client: redis.Redis, deployment: str) -> None:  # fmt: skip
    client = app.test_client()
    waiting = Background(lambda: post(app.test_client()))
    rid = wait_for_job(redis_client, deployment)
    assert value(scrape(client), "hark_active_requests", deployment=deployment) == 1.0, "the waiting request"
    JobStore(redis_client, deployment, 600, 600).complete(rid, wire_response(rid, deployment))
    assert waiting.result().status_code == 200

    assert post(client, language="xx").status_code == 400  # refused by routing: no user input in the labels
    assert client.get("/waves/v1/stt/jobs/req_" + "0" * 24).status_code == 404
    for _ in range(3):
        client.get("/health")  # probes are not requests
    samples = scrape(client)
    requests_total = {labels: count for (name, labels), count in samples.items()
                      if name == "hark_requests_total" and ("deployment", deployment) in labels}  # fmt: skip
    assert requests_total == {
        frozenset({"deployment": deployment, "checkpoint": "whisper-tiny-en", "language": "en",
                   "status": "200"}.items()): 1.0,
        frozenset({"deployment": deployment, "checkpoint": "none", "language": "none", "status": "400"}.items()): 1.0,
        frozenset({"deployment": deployment, "checkpoint": "none", "language": "none", "status": "404"}.items()): 1.0,
    }  # fmt: skip
    assert value(samples, "hark_active_requests", deployment=deployment) == 0.0


def test_metrics_scrape_follows_metrics_auth_when_keys_are_required(make_app: AppFactory, live: None,
                                                                   deployment: str) -> None:  # fmt: skip
    guarded = make_app(api_keys="k-secret", metrics_auth="key").test_client()
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer k-secret"}).status_code == 200

    client = make_app(api_keys="k-secret", metrics_auth="open").test_client()
    assert client.post("/waves/v1/stt/?model=pulse&language=en", data=b"x").status_code == 401
    samples = scrape(client)  # no key
    labels = {"deployment": deployment, "checkpoint": "none", "language": "none", "status": "401"}
    assert value(samples, "hark_requests_total", **labels) == 1.0


def test_queue_depth_sums_every_priority_list_of_every_queue(app: Flask, live: None, redis_client: redis.Redis,
                                                            deployment: str) -> None:  # fmt: skip
    tiny, base = transcribe_queue(deployment, "whisper-tiny-en"), transcribe_queue(deployment, "whisper-base")
    plain, *priorities = redis_lists(deployment, tiny)
    assert plain == queue_key(deployment, tiny) and priorities[0] == plain + "\x06\x163"
    redis_client.rpush(plain, b"m1", b"m2")
    redis_client.rpush(priorities[-1], b"m3")  # priority 9
    redis_client.rpush(queue_key(deployment, webhook_queue(deployment)), b"w1")

    assert queue_depths(redis_client, deployment) == {tiny: 3, base: 0, webhook_queue(deployment): 1,
                                                      default_queue(deployment): 0}  # fmt: skip
    samples = scrape(app.test_client())
    assert value(samples, "hark_queue_depth", deployment=deployment, queue=tiny) == 3.0
    assert value(samples, "hark_queue_depth", deployment=deployment, queue=base) == 0.0
    assert value(samples, "hark_queue_depth", deployment=deployment, queue=webhook_queue(deployment)) == 1.0


def test_an_unreachable_redis_leaves_queue_depth_out_quickly(app: Flask, live: None, deployment: str) -> None:
    svc = app.extensions["hark"]
    svc.queue_depth = QueueDepthCollector("redis://127.0.0.1:1/0", deployment, timeout=0.5)  # nothing listens
    started = time.monotonic()
    samples = scrape(app.test_client())
    assert time.monotonic() - started < 3
    assert not any(name == "hark_queue_depth" for name, _ in samples)
    assert any(name == "hark_requests_total" for name, _ in samples)


@pytest.fixture(autouse=True)
def _close_collectors(make_app: AppFactory) -> object:
    yield
    for app in make_app.apps:
        app.extensions["hark"].queue_depth.close()
