"""`/health` and `/ready` follow the worker registry; a dead worker vanishes within seconds."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
import requests

from hark.registry import live_instances
from tests.conftest import Checkpoints, Deployment
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


def test_health_and_ready_on_the_shared_deployment(shared_deployment: Deployment) -> None:
    health = requests.get(f"{shared_deployment.url}/health", timeout=10)
    assert health.status_code == 200
    ready = requests.get(f"{shared_deployment.url}/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    text = ready.text
    for expected in ("whisper-tiny-en", "whisper-base", shared_deployment.name):
        assert expected in text, f"{expected} missing from /ready: {text[:1000]}"
    assert '"en"' in text


def test_openapi_document(shared_deployment: Deployment) -> None:
    answer = requests.get(f"{shared_deployment.url}/openapi.json", timeout=10)
    assert answer.status_code == 200
    document = answer.json()
    assert "openapi" in document and "/waves/v1/stt/" in document["paths"], sorted(document.get("paths", {}))


@pytest.mark.timeout(300)
def test_ready_follows_the_worker(hark: Launcher, bundled_checkpoints: Checkpoints, redis_client: redis.Redis) -> None:
    name = hark.new_deployment("ready")
    api = hark.start_api(name)
    url = f"{api.base_url}/ready"

    # No worker yet: not ready, with a reason.
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 503, answer.text
    assert isinstance(answer.json().get("error"), str)

    worker = hark.start_worker(name, [bundled_checkpoints.tiny_en], HARK_CONCURRENCY_PER_CHECKPOINT=3)
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    text = answer.text
    assert "whisper-tiny-en" in text and '"en"' in text and "3" in text, text

    # A worker killed without any chance to clean up disappears within TTL + one heartbeat.
    tree = [worker.pid, *descendants(worker.pid)]
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    took = _wait_for(lambda: not live_instances(redis_client, name), WORKER_TTL + HEARTBEAT + 1.0)
    print(f"registry emptied {took:.1f} s after SIGKILL")
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 503, answer.text
    assert isinstance(answer.json().get("error"), str)


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
