"""No accepted job is left without an answer.

- Redis takes no writes (paused, as during a failover) for longer than the worker's retries to store
  the result: the message is not acknowledged as failed but goes back to the queue, and the job still
  ends in success.
- The worker running a job disappears with its message and no redelivery is possible before the job's
  deadline: the reaper (in another worker of the deployment) answers ``job_lost`` (504), to the
  waiting request and to the webhook, and drops the staged audio.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import redis
import requests

from hark.jobs import JobStore
from hark.registry import live_instances
from tests.audio import AudioFactory
from tests.conftest import Checkpoints
from tests.e2e.helpers import JOBS_PATH, TINY_EN, poll_job, post_audio
from tests.e2e.test_async import WebhookReceiver, webhook  # noqa: F401  (fixture)
from tests.processes import HarkProcess, Launcher, descendants, start_redis

pytestmark = pytest.mark.e2e


def _wait_for_log(process: HarkProcess, needles: tuple[str, ...], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = process.log_text(limit=None)
        for needle in needles:
            if needle in text:
                return needle
        time.sleep(0.2)
    raise AssertionError(f"none of {needles} in the log of {process.name} within {timeout:.0f} s")


@pytest.mark.timeout(420)
def test_a_result_redis_cannot_store_is_requeued_and_the_job_still_succeeds(
    bundled_checkpoints: Checkpoints, audio: AudioFactory, tmp_path: Path
) -> None:
    """Writes hang (``CLIENT PAUSE ... WRITE``, as during a failover) until the worker has given up
    storing the result; then Redis answers again. The message must go back to the queue rather than
    be acknowledged, and the job end in success well before the (hour-long) visibility timeout."""
    server, url = start_redis(tmp_path / "redis")  # a private Redis: this test pauses it
    launcher = Launcher(url, tmp_path / "logs", "pause")
    admin = redis.Redis.from_url(url)
    try:
        name = launcher.new_deployment("pause")
        # A short retry window keeps the test short; the worker's give-up path is the same at 60 s.
        worker = launcher.start_worker(name, [bundled_checkpoints.tiny_en], HARK_STORE_RETRY_SECONDS="5")
        api = launcher.start_api(name, HARK_SYNC_WAIT_SECONDS="0.5")
        assert api.base_url
        answer = post_audio(api.base_url, audio.long_english(90), language="en")
        assert answer.status_code == 202, answer.text
        request_id = answer.json()["request_id"]
        store = JobStore(admin, name, 3600, 3600)
        deadline = time.monotonic() + 60
        while (store.get(request_id) or {}).get("status") != "processing":
            assert time.monotonic() < deadline, store.get(request_id)
            time.sleep(0.02)
        time.sleep(0.5)  # the audio is fetched; the engine runs without Redis

        admin.execute_command("CLIENT", "PAUSE", 240_000, "WRITE")  # every write now hangs
        paused_at = time.monotonic()
        try:
            gave_up = _wait_for_log(worker, ("cannot record the job's outcome", "raised unexpected"), timeout=200)
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
        print(f"the worker gave up storing the result after {time.monotonic() - paused_at:.1f} s ({gave_up!r})")
        assert (store.get(request_id) or {}).get("status") == "processing"

        body, seen = poll_job(api.base_url, request_id, timeout=90, interval=0.5)
        state = store.get(request_id) or {}
        print(f"answered {time.monotonic() - paused_at:.1f} s after Redis stopped taking writes; statuses {seen}; "
              f"attempts {state.get('attempts')}")  # fmt: skip
        assert body["status"] == "success" and body["metadata"]["checkpoint"] == TINY_EN, (body, seen)
        lines = [line for line in worker.log_text(limit=None).splitlines()
                 if request_id in line and "transcribing" in line]  # fmt: skip
        assert len(lines) == 2 and "redelivered" in lines[1], lines
    finally:
        launcher.stop_all()
        admin.close()
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.timeout(420)
def test_a_job_whose_worker_is_lost_is_answered_job_lost_by_the_reaper(
    hark: Launcher, bundled_checkpoints: Checkpoints, audio: AudioFactory, redis_client: redis.Redis,
    webhook: WebhookReceiver,  # noqa: F811
) -> None:
    name = hark.new_deployment("reap")
    env = {"HARK_JOB_DEADLINE_SECONDS": "15", "HARK_REAPER_INTERVAL_SECONDS": "1",
           "HARK_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "HARK_SYNC_WAIT_SECONDS": "120"}  # fmt: skip
    # The survivor serves another checkpoint: it never takes the job, only reaps it.
    hark.start_worker(name, [bundled_checkpoints.base], **env)
    victim = hark.start_worker(name, [bundled_checkpoints.tiny_en], **env)
    tree = {victim.pid, *descendants(victim.pid)}
    (victim_id,) = {i.worker_id for i in live_instances(redis_client, name) if i.pid in tree}
    api = hark.start_api(name, **env)
    assert api.base_url
    clip = audio.long_english(240)

    async_answer = post_audio(api.base_url, clip, language="en", webhook_url=webhook.url)
    assert async_answer.status_code == 200 and async_answer.json()["status"] == "processing", async_answer.text
    async_id = async_answer.json()["request_id"]
    accepted_at = time.monotonic()
    sync_answer: dict[str, requests.Response] = {}
    waiting = threading.Thread(target=lambda: sync_answer.setdefault("r", post_audio(api.base_url, clip,
                                                                                     language="en")))  # fmt: skip
    waiting.start()

    store = JobStore(redis_client, name, 3600, 3600)
    deadline = time.monotonic() + 60
    while (store.get(async_id) or {}).get("worker_id") != victim_id:
        assert time.monotonic() < deadline, store.get(async_id)
        time.sleep(0.05)
    # The sync request must be queued (on the victim's checkpoint) before the kill: a request routed after
    # it would go to the survivor, which serves English too, and simply succeed.
    while redis_client.zcard(store.deadlines_key) < 2:
        assert time.monotonic() < deadline, "the sync request was never queued"
        time.sleep(0.05)
    # The whole worker (supervisor and children) dies: nothing acknowledges or requeues its messages,
    # and the visibility timeout (an hour) is far beyond the jobs' 15 s deadline.
    victim.remember_tree()
    for pid in [victim.pid, *descendants(victim.pid)]:
        os.kill(pid, signal.SIGKILL)

    call = webhook.next(timeout=90)
    took = time.monotonic() - accepted_at
    body = call["body"]
    print(f"job_lost webhook {took:.1f} s after the job was accepted: {body}")
    assert body["status"] == "failed" and body["request_id"] == async_id, body
    assert body["details"][0] == {"code": "job_lost", "http_status": 504}, body
    assert 15 <= took < 15 + 20, took

    polled = requests.get(f"{api.base_url}{JOBS_PATH}{async_id}", timeout=10).json()
    assert polled["status"] == "failed" and polled["details"][0]["code"] == "job_lost", polled
    assert redis_client.exists(store.audio_key(async_id)) == 0, "the staged audio must be dropped"

    waiting.join(timeout=60)
    sync = sync_answer["r"]
    assert sync.status_code == 504, sync.text
    assert sync.json()["details"][0]["code"] == "job_lost"
    assert redis_client.zcard(store.deadlines_key) == 0
    _, seen = poll_job(api.base_url, async_id, timeout=5)
    assert seen == ["failed"]
