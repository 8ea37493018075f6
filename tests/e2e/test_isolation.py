"""Two deployments on one Redis never see each other's jobs, queues or workers."""

from __future__ import annotations

import time

import pytest
import redis

from hark.jobs import JobStore
from hark.registry import live_instances
from tests.audio import AudioFactory
from tests.conftest import Checkpoints
from tests.e2e.helpers import BASE, TINY_EN, assert_error, assert_success, poll_job, post_audio
from tests.processes import Launcher

pytestmark = pytest.mark.e2e

#: Long enough that tiny.en on one thread needs well over 20 s for it on the test machine.
SLOW_JOB_AUDIO_SECONDS = 300  # ~30 s for tiny.en on one lane here: past A's 11 s + sweeps


@pytest.mark.timeout(420)
def test_two_deployments_on_one_redis_stay_isolated(
    hark: Launcher, bundled_checkpoints: Checkpoints, audio: AudioFactory, redis_client: redis.Redis
) -> None:
    dep_a, dep_b = hark.new_deployment("a"), hark.new_deployment("b")
    worker_a = hark.start_worker(dep_a, [bundled_checkpoints.tiny_en])
    worker_b = hark.start_worker(dep_b, [bundled_checkpoints.base])
    api_a, api_b = hark.start_api(dep_a), hark.start_api(dep_b)
    assert api_a.base_url and api_b.base_url

    # The registry keeps them apart, and so do the queue names.
    live_a, live_b = live_instances(redis_client, dep_a), live_instances(redis_client, dep_b)
    assert {i.checkpoint.name for i in live_a} == {"whisper-tiny-en"}
    assert {i.checkpoint.name for i in live_b} == {"whisper-base"}
    assert all(i.deployment == dep_a and dep_a in i.queue for i in live_a)
    assert all(i.deployment == dep_b and dep_b in i.queue for i in live_b)
    assert not {i.queue for i in live_a} & {i.queue for i in live_b}
    workers_a = {i.worker_id for i in live_a}

    # A answers English from its own worker.
    body = assert_success(post_audio(api_a.base_url, audio.english(1), language="en"),
                          deployment=dep_a, checkpoint=TINY_EN)  # fmt: skip
    request_id = body["request_id"]

    # A does not serve German, although B (on the same Redis) does.
    error = assert_error(post_audio(api_a.base_url, audio.german(), language="de"), 400, "de")
    assert dep_a in error["error"] or "served" in error["error"].lower()

    # B answers German from its worker, and English through its multilingual checkpoint.
    assert_success(post_audio(api_b.base_url, audio.german(), language="de"), deployment=dep_b, checkpoint=BASE)
    assert_success(post_audio(api_b.base_url, audio.english(1), language="en"), deployment=dep_b, checkpoint=BASE)

    # A's job lives only under A's keys, was taken by A's worker, and never reached B's worker.
    state = JobStore(redis_client, dep_a, 3600, 3600).get(request_id)
    assert state is not None and state["status"] == "success", state
    if "worker_id" in state:
        assert state["worker_id"] in workers_a, (state["worker_id"], workers_a)
    assert JobStore(redis_client, dep_b, 3600, 3600).get(request_id) is None
    keys = [k.decode() for k in redis_client.scan_iter(match=f"*{request_id}*")]
    assert keys and all(dep_a in key and dep_b not in key for key in keys), keys
    assert request_id not in worker_b.log_text(limit=None)
    assert request_id in worker_a.log_text(limit=None), "worker A should log the request it served"


@pytest.mark.timeout(420)
def test_a_short_visibility_timeout_never_requeues_another_deployments_running_job(
    hark: Launcher, bundled_checkpoints: Checkpoints, audio: AudioFactory, redis_client: redis.Redis
) -> None:
    """Deployment A sweeps for stale unacked messages every 2 s and restores those older than 11 s;
    B's job runs longer than that on the same Redis database and must still be transcribed once."""
    dep_a, dep_b = hark.new_deployment("vis-a"), hark.new_deployment("vis-b")
    hark.start_worker(dep_a, [bundled_checkpoints.tiny_en], HARK_CONCURRENCY_PER_CHECKPOINT=1,
                      HARK_JOB_TIMEOUT_SECONDS=10, HARK_VISIBILITY_TIMEOUT_SECONDS=11)  # fmt: skip
    # Two slots and one lane: a second copy of the job would be admitted (and logged) at once.
    # No all-cores solo replica: the lone job must run on one lane's thread to outlive A's timeout + sweeps.
    worker_b = hark.start_worker(dep_b, [bundled_checkpoints.tiny_en], HARK_CONCURRENCY_PER_CHECKPOINT=2,
                                 HARK_SOLO_REPLICA="off")  # fmt: skip
    api_b = hark.start_api(dep_b, HARK_SYNC_WAIT_SECONDS="0.5")
    assert api_b.base_url

    answer = post_audio(api_b.base_url, audio.long_english(SLOW_JOB_AUDIO_SECONDS), language="en")
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["request_id"]
    store = JobStore(redis_client, dep_b, 3600, 3600)
    started = time.monotonic()
    body, seen = poll_job(api_b.base_url, request_id, timeout=300, interval=0.5)
    took = time.monotonic() - started
    assert body["status"] == "success", (body, seen)
    # Vacuous unless the job outlived A's visibility timeout plus a few of A's sweeps.
    assert took > 11 + 3 * 2, f"the job took only {took:.1f} s; use longer audio"

    time.sleep(3)  # a copy restored late would be admitted within a moment
    lines = [line for line in worker_b.log_text(limit=None).splitlines()
             if request_id in line and "transcribing" in line and "transcribed" not in line]  # fmt: skip
    print(f"B's job took {took:.1f} s; B's worker started it {len(lines)} time(s): {lines}")
    assert len(lines) == 1, f"B's job was started {len(lines)} times (restored by A?): {lines}"
    assert (store.get(request_id) or {}).get("status") == "success"
