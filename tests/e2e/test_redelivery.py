"""A job accepted is a job answered: a model child SIGKILLed mid-job is restarted by the supervisor,
the unacknowledged message is redelivered after the broker's visibility timeout, and the job ends in
success."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
import requests

from hark.jobs import JobStore
from hark.registry import live_instances
from tests.audio import AudioFactory
from tests.conftest import Checkpoints
from tests.e2e.helpers import JOBS_PATH, TINY_EN, poll_job, post_audio
from tests.processes import Launcher, descendants, pid_alive

pytestmark = pytest.mark.e2e

#: Short timeouts so redelivery happens within the test (visibility must exceed the job timeout).
TIMEOUTS = {"HARK_JOB_TIMEOUT_SECONDS": "10", "HARK_VISIBILITY_TIMEOUT_SECONDS": "12"}


@pytest.mark.timeout(300)
def test_worker_killed_mid_job_the_job_is_redelivered(
    hark: Launcher, bundled_checkpoints: Checkpoints, audio: AudioFactory, redis_client: redis.Redis
) -> None:
    name = hark.new_deployment("kill")
    worker = hark.start_worker(name, [bundled_checkpoints.tiny_en], HARK_CONCURRENCY_PER_CHECKPOINT=1, **TIMEOUTS)
    api = hark.start_api(name, HARK_SYNC_WAIT_SECONDS="0.5", **TIMEOUTS)
    assert api.base_url
    (instance,) = live_instances(redis_client, name)
    child_pid = instance.pid
    assert child_pid in descendants(worker.pid), "the registry pid must be a child of our worker"

    clip = audio.long_english(30)
    answer = post_audio(api.base_url, clip, language="en")
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["request_id"]
    store = JobStore(redis_client, name, 3600, 3600)

    # Kill the model child the moment the job is being processed.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = store.get(request_id) or {}
        if state.get("status") == "processing":
            os.kill(child_pid, signal.SIGKILL)
            killed_at = time.monotonic()
            break
        assert state.get("status") != "success", "the job finished before it could be interrupted"
        time.sleep(0.02)
    else:
        raise AssertionError(f"job never reached processing: {store.get(request_id)}")
    time.sleep(0.5)
    assert not pid_alive(child_pid)
    assert (store.get(request_id) or {}).get("status") != "success"
    polled = requests.get(f"{api.base_url}{JOBS_PATH}{request_id}", timeout=10)
    assert polled.status_code in (200, 202) and polled.json()["status"] == "processing", polled.text

    # The supervisor restarts the child (a new pid announces the checkpoint again).
    restarted = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and restarted is None:
        assert worker.alive(), "the supervisor itself must survive a child's death"
        fresh = [i for i in live_instances(redis_client, name) if i.pid != child_pid]
        restarted = fresh[0] if fresh else None
        time.sleep(0.25)
    assert restarted is not None, "the supervisor did not restart the killed child"
    assert restarted.pid in descendants(worker.pid)
    worker.remember_tree()

    # The message comes back after the visibility timeout and the job is answered, not lost.
    body, seen = poll_job(api.base_url, request_id, timeout=90, interval=0.5)
    assert body["status"] == "success", (body, seen)
    assert body["metadata"]["checkpoint"] == TINY_EN
    assert len(body["transcription"].split()) >= 20, body["transcription"]
    took = time.monotonic() - killed_at
    print(f"redelivered and answered {took:.1f} s after the kill; statuses {seen}")
    assert took >= 5, "answered suspiciously fast: was the job really interrupted?"


@pytest.mark.timeout(300)
def test_worker_stopped_mid_job_finishes_it_and_leaves_the_rest_queued(
    hark: Launcher, bundled_checkpoints: Checkpoints, audio: AudioFactory, redis_client: redis.Redis
) -> None:
    name = hark.new_deployment("drain")
    worker = hark.start_worker(name, [bundled_checkpoints.tiny_en], HARK_CONCURRENCY_PER_CHECKPOINT=1)
    api = hark.start_api(name, HARK_SYNC_WAIT_SECONDS="0.2")
    assert api.base_url
    clip = audio.long_english(30)
    first = post_audio(api.base_url, clip, language="en").json()["request_id"]
    second = post_audio(api.base_url, clip, language="en").json()["request_id"]
    store = JobStore(redis_client, name, 3600, 3600)

    deadline = time.monotonic() + 60
    while (store.get(first) or {}).get("status") != "processing":
        assert time.monotonic() < deadline, store.get(first)
        time.sleep(0.02)
    worker.popen.send_signal(signal.SIGTERM)  # a rollout: warm shutdown

    assert worker.popen.wait(timeout=60) == 0
    assert (store.get(first) or {}).get("status") == "success", "the running job must be finished, not dropped"
    assert (store.get(second) or {}).get("status") == "queued", "the waiting job must stay queued"

    # The next worker of the deployment picks the waiting job up.
    hark.start_worker(name, [bundled_checkpoints.tiny_en], HARK_CONCURRENCY_PER_CHECKPOINT=1)
    body, _ = poll_job(api.base_url, second, timeout=90)
    assert body["status"] == "success" and body["metadata"]["checkpoint"] == TINY_EN
