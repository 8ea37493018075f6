"""``/metrics`` of a real API (two gunicorn workers, merged) and of a real worker host, plus the worker's ``/health``,
on the shared deployment: one transcription moves the request, task and audio counters."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.audio import AudioFactory
from tests.conftest import Deployment
from tests.e2e.helpers import assert_success, post_audio

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset], float]


def scrape(url: str) -> Samples:
    answer = requests.get(f"{url}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}  # fmt: skip


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_transcription_moves_the_api_and_worker_metrics(shared_deployment: Deployment, audio: AudioFactory) -> None:
    api, worker, name = shared_deployment.url, shared_deployment.worker.metrics_url, shared_deployment.name
    health = requests.get(f"{worker}/health", timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok" and len(health.json()["children"]) == 3  # two checkpoints + webhooks

    ok = {"deployment": name, "checkpoint": "whisper-tiny-en", "language": "en", "status": "200"}
    refused = {"deployment": name, "checkpoint": "none", "language": "none", "status": "400"}
    batch = {"deployment": name, "checkpoint": "whisper-tiny-en", "kind": "batch", "outcome": "success"}
    tiny = {"deployment": name, "checkpoint": "whisper-tiny-en"}
    api_before, worker_before = scrape(api), scrape(worker)

    assert_success(post_audio(api, audio.english(0), language="en"), deployment=name)
    for _ in range(4):  # spread over both gunicorn workers: the scrape must add them up
        assert post_audio(api, b"RIFF", language="xx").status_code == 400
    api_after, worker_after = scrape(api), scrape(worker)

    assert get(api_after, "hark_requests_total", **ok) - get(api_before, "hark_requests_total", **ok) == 1
    assert get(api_after, "hark_requests_total", **refused) - get(api_before, "hark_requests_total", **refused) == 4
    assert get(api_after, "hark_active_requests", deployment=name) == 0
    assert ("hark_queue_depth", frozenset({"deployment": name, "queue": f"hark.{name}.whisper-tiny-en"}.items())) \
        in api_after

    assert get(worker_after, "hark_worker_tasks_total", **batch) - get(worker_before, "hark_worker_tasks_total",
                                                                        **batch) == 1  # fmt: skip
    seconds = {**tiny, "language": "en"}
    assert get(worker_after, "hark_audio_seconds_total", **seconds) - get(worker_before, "hark_audio_seconds_total",
                                                                           **seconds) > 1.0  # fmt: skip
    assert get(worker_after, "hark_realtime_factor_count", **tiny) >= 1
    assert get(worker_after, "hark_worker_slots", **tiny) == 2
    assert get(worker_after, "hark_worker_active_requests", **tiny) == 0
    assert get(worker_after, "hark_model_load_seconds", **tiny) > 0
    assert get(worker_after, "hark_checkpoint_cache_events_total", event="hit") >= 2  # both served from the cache
