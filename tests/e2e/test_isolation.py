"""Two deployments on one Redis never see each other's jobs, queues or workers."""

from __future__ import annotations

import pytest
import redis

from hark.jobs import JobStore
from hark.registry import live_instances
from tests.audio import AudioFactory
from tests.conftest import Checkpoints
from tests.e2e.helpers import BASE, TINY_EN, assert_error, assert_success, post_audio
from tests.processes import Launcher

pytestmark = pytest.mark.e2e


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
