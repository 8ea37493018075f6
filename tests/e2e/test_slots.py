"""Per-checkpoint concurrency slots are enforced: never more in flight than slots, the rest queued."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import redis

from hark.broker import queue_key
from hark.queues import transcribe_queue
from hark.registry import live_instances
from tests.audio import AudioFactory
from tests.conftest import Checkpoints, Deployment
from tests.e2e.helpers import TINY_EN, assert_success, post_audio
from tests.processes import Launcher

pytestmark = pytest.mark.e2e


@dataclass
class Sampled:
    max_in_flight: int = 0
    max_queued: int = 0
    slots_seen: set[int] = field(default_factory=set)
    samples: int = 0


def _run_and_sample(base_url: str, client: redis.Redis, deployment: str, checkpoint: str, clip: bytes,
                    requests_count: int) -> tuple[Sampled, list]:  # fmt: skip
    """Send `requests_count` concurrent requests and sample the registry and the queue meanwhile."""
    sampled = Sampled()
    stop = threading.Event()
    queue = queue_key(deployment, transcribe_queue(deployment, checkpoint))

    def sample() -> None:
        while not stop.is_set():
            for instance in live_instances(client, deployment):
                if instance.checkpoint.name == checkpoint:
                    sampled.max_in_flight = max(sampled.max_in_flight, instance.in_flight)
                    sampled.slots_seen.add(instance.slots)
            sampled.max_queued = max(sampled.max_queued, client.llen(queue))
            sampled.samples += 1
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(requests_count) as pool:
            futures = [pool.submit(post_audio, base_url, clip, language="en") for _ in range(requests_count)]
            answers = [f.result() for f in futures]
        time.sleep(0.2)
    finally:
        stop.set()
        sampler.join(timeout=5)
    return sampled, answers


@pytest.mark.timeout(300)
def test_one_slot_means_one_request_at_a_time(hark: Launcher, bundled_checkpoints: Checkpoints,
                                              audio: AudioFactory, redis_client: redis.Redis) -> None:  # fmt: skip
    name = hark.new_deployment("slots1")
    hark.start_worker(name, [bundled_checkpoints.tiny_en], HARK_CONCURRENCY_PER_CHECKPOINT=1)
    api = hark.start_api(name)
    assert api.base_url
    clip = audio.long_english(8).read_bytes()
    sampled, answers = _run_and_sample(api.base_url, redis_client, name, "whisper-tiny-en", clip, 5)
    for answer in answers:
        assert_success(answer, deployment=name, checkpoint=TINY_EN)
    print(f"slots=1: {sampled}")
    assert sampled.slots_seen == {1}, sampled
    assert sampled.max_in_flight == 1, f"in_flight must reach but never exceed 1: {sampled}"
    assert sampled.max_queued >= 3, f"extra requests should wait in the queue, not in the worker: {sampled}"


@pytest.mark.timeout(300)
def test_two_slots_on_the_shared_deployment(shared_deployment: Deployment, audio: AudioFactory,
                                            redis_client: redis.Redis) -> None:  # fmt: skip
    clip = audio.long_english(8).read_bytes()
    # 10 requests: ~5 s with both slots busy, several heartbeats (every 1.5 s) to see in_flight == 2.
    sampled, answers = _run_and_sample(shared_deployment.url, redis_client, shared_deployment.name,
                                       "whisper-tiny-en", clip, 10)  # fmt: skip
    for answer in answers:
        assert_success(answer, checkpoint=TINY_EN)
    print(f"slots=2: {sampled}")
    assert sampled.slots_seen == {2}, sampled
    assert sampled.max_in_flight == 2, f"in_flight must reach but never exceed 2: {sampled}"
    assert sampled.max_queued >= 3, f"extra requests should wait in the queue, not in the worker: {sampled}"
