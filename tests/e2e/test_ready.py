"""`/health` and `/ready` follow the worker registry; a dead worker vanishes within seconds."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
import redis
import requests

from hark.registry import live_instances
from tests.audio import AudioFactory
from tests.conftest import Checkpoints, Deployment
from tests.e2e.helpers import assert_error, post_audio
from tests.processes import Launcher, descendants

pytestmark = pytest.mark.e2e

#: Defaults of hark.settings (HARK_HEARTBEAT_SECONDS, HARK_WORKER_TTL_SECONDS).
HEARTBEAT, WORKER_TTL = 1.5, 6.0


def _wait_for(predicate: object, timeout: float, interval: float = 0.1) -> float:
    """Seconds until `predicate()` holds; raises after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def _values(document: Any, key: str) -> list[Any]:
    """Every value stored under `key` anywhere in a JSON document."""
    found = []
    if isinstance(document, dict):
        for name, value in document.items():
            if name == key:
                found.append(value)
            found += _values(value, key)
    elif isinstance(document, list):
        for item in document:
            found += _values(item, key)
    return found


def _assert_unavailable(answer: requests.Response) -> None:
    """503 with the documented error body and a Retry-After the SDK honours."""
    assert_error(answer, 503)
    assert answer.headers.get("Retry-After", "").isdigit(), answer.headers


def test_health_and_ready_on_the_shared_deployment(shared_deployment: Deployment) -> None:
    health = requests.get(f"{shared_deployment.url}/health", timeout=10)
    assert health.status_code == 200
    ready = requests.get(f"{shared_deployment.url}/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    text = ready.text
    for expected in ("whisper-tiny-en@1.0.0", "whisper-base@1.0.0", shared_deployment.name):
        assert expected in text, f"{expected} missing from /ready: {text[:1000]}"
    body = ready.json()
    assert 2 in _values(body, "slots"), "/ready should report the slots per checkpoint (2 in this deployment)"
    languages = [lang for value in _values(body, "languages") for lang in value]
    assert "en" in languages and "de" in languages


def test_openapi_document(shared_deployment: Deployment) -> None:
    answer = requests.get(f"{shared_deployment.url}/openapi.json", timeout=10)
    assert answer.status_code == 200
    document = answer.json()
    assert "openapi" in document and "/waves/v1/stt/" in document["paths"], sorted(document.get("paths", {}))


@pytest.mark.timeout(300)
def test_ready_follows_the_worker(hark: Launcher, bundled_checkpoints: Checkpoints, redis_client: redis.Redis,
                                  audio: AudioFactory) -> None:  # fmt: skip
    name = hark.new_deployment("ready")
    api = hark.start_api(name)
    assert api.base_url
    url = f"{api.base_url}/ready"

    # No worker has ever registered: not ready, and requests get 503 + Retry-After (not 400).
    _assert_unavailable(requests.get(url, timeout=10))
    _assert_unavailable(post_audio(api.base_url, audio.english(1), language="en"))

    worker = hark.start_worker(name, [bundled_checkpoints.tiny_en], HARK_CONCURRENCY_PER_CHECKPOINT=3)
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    assert "whisper-tiny-en@1.0.0" in answer.text
    assert 3 in _values(answer.json(), "slots"), answer.text

    # A worker killed without any chance to clean up disappears within TTL + one heartbeat.
    tree = [worker.pid, *descendants(worker.pid)]
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    took = _wait_for(lambda: not live_instances(redis_client, name), WORKER_TTL + HEARTBEAT + 1.0)
    print(f"registry emptied {took:.1f} s after SIGKILL")
    _assert_unavailable(requests.get(url, timeout=10))
    # The deployment still knows it serves English (catalog): 503 "retry", not 400 "not served".
    _assert_unavailable(post_audio(api.base_url, audio.english(1), language="en"))
    assert_error(post_audio(api.base_url, audio.english(1), language="de"), 400, "de")


@pytest.mark.timeout(300)
def test_clean_stop_withdraws_at_once(hark: Launcher, bundled_checkpoints: Checkpoints,
                                      redis_client: redis.Redis) -> None:  # fmt: skip
    name = hark.new_deployment("stop")
    worker = hark.start_worker(name, [bundled_checkpoints.tiny_en])
    started = time.monotonic()
    code = hark.stop(worker)
    print(f"worker stopped with code {code} in {time.monotonic() - started:.1f} s")
    assert code == 0, f"SIGTERM should stop the worker cleanly, got {code}"
    assert not live_instances(redis_client, name), "a clean stop should withdraw from the registry"


def test_api_without_redis_answers_503_not_500(hark: Launcher, audio: AudioFactory) -> None:
    from tests.processes import free_port

    api = hark.start_api(hark.new_deployment("noredis"), REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert api.base_url
    assert requests.get(f"{api.base_url}/health", timeout=10).status_code == 200
    _assert_unavailable(requests.get(f"{api.base_url}/ready", timeout=30))
    _assert_unavailable(post_audio(api.base_url, audio.english(1), language="en", timeout=60))
