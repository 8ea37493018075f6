"""A rollout does not strand jobs: SIGTERM makes a worker stop consuming, requeue the jobs it has not
started at once and those still running after HARK_SHUTDOWN_GRACE_SECONDS, so a second worker of the
deployment takes them within seconds rather than after the broker's visibility timeout (an hour)."""

from __future__ import annotations

import signal
import time

import pytest
import redis

from hark.jobs import JobStore
from hark.registry import live_instances
from tests.audio import AudioFactory
from tests.conftest import Checkpoints
from tests.e2e.helpers import post_audio
from tests.processes import HarkProcess, Launcher, descendants

pytestmark = pytest.mark.e2e

GRACE_SECONDS = 8.0
#: One slot more than lanes (one lane in the tests): one job runs, the other waits for the lane.
WORKER_ENV = {"HARK_CONCURRENCY_PER_CHECKPOINT": "2", "HARK_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS)}
#: Audio tiny.en needs well over a minute for on one thread here, so both jobs are still in flight.
LONG_AUDIO_SECONDS = 600


def _worker_id(client: redis.Redis, deployment: str, worker: HarkProcess) -> str:
    tree = {worker.pid, *descendants(worker.pid)}
    (instance,) = [i for i in live_instances(client, deployment) if i.pid in tree]
    return instance.worker_id


def _summary(store: JobStore, request_ids: list[str]) -> list[tuple[str, str, str]]:
    states = [store.get(r) or {} for r in request_ids]
    return [(r, str(s.get("status")), str(s.get("worker_id"))) for r, s in zip(request_ids, states, strict=True)]


def _started(worker: HarkProcess, request_id: str) -> bool:
    return any("transcribing" in line and request_id in line for line in worker.log_text(limit=None).splitlines())


@pytest.mark.timeout(480)
def test_sigterm_requeues_jobs_in_flight_to_another_worker_within_seconds(
    hark: Launcher, bundled_checkpoints: Checkpoints, audio: AudioFactory, redis_client: redis.Redis
) -> None:
    name = hark.new_deployment("rollout")
    first = hark.start_worker(name, [bundled_checkpoints.tiny_en], **WORKER_ENV)
    first_id = _worker_id(redis_client, name, first)
    api = hark.start_api(name, HARK_SYNC_WAIT_SECONDS="0.2")
    assert api.base_url
    clip = audio.long_english(LONG_AUDIO_SECONDS)
    request_ids = []
    for _ in range(2):
        answer = post_audio(api.base_url, clip, language="en")
        assert answer.status_code == 202, answer.text
        request_ids.append(answer.json()["request_id"])
    store = JobStore(redis_client, name, 3600, 3600)
    deadline = time.monotonic() + 60
    while not all((store.get(r) or {}).get("worker_id") == first_id for r in request_ids):
        assert time.monotonic() < deadline, [store.get(r) for r in request_ids]
        time.sleep(0.05)

    # The second worker comes up while the first holds both jobs (one running, one waiting for the lane).
    second = hark.start_worker(name, [bundled_checkpoints.tiny_en], **WORKER_ENV)
    second_id = _worker_id(redis_client, name, second)
    states = [store.get(r) or {} for r in request_ids]
    assert all(s.get("status") == "processing" and s.get("worker_id") == first_id for s in states), states

    sent_at = time.monotonic()
    first.popen.send_signal(signal.SIGTERM)
    taken: dict[str, float] = {}
    deadline = sent_at + 90
    while len(taken) < len(request_ids) and time.monotonic() < deadline:
        for rid in request_ids:
            state = store.get(rid) or {}
            if rid not in taken and (state.get("worker_id") == second_id or state.get("status") == "success"):
                taken[rid] = time.monotonic() - sent_at
        time.sleep(0.05)
    code = first.popen.wait(timeout=GRACE_SECONDS + 30)
    stopped = time.monotonic() - sent_at
    print(f"after SIGTERM: jobs taken over (or finished) in {sorted(round(t, 1) for t in taken.values())} s; "
          f"first worker exited with {code} after {stopped:.1f} s")  # fmt: skip
    assert len(taken) == len(request_ids), f"jobs stranded on the stopped worker: {_summary(store, request_ids)}"
    waiting, running = sorted(taken.values())
    assert waiting < GRACE_SECONDS / 2, f"the job waiting for the lane must be requeued at once: {taken}"
    assert running < GRACE_SECONDS + 10, f"the running job must be requeued right after the grace: {taken}"
    assert code == 0

    # Both jobs now run on the second worker (that they then finish is the fault suite's audit,
    # tests/faults/test_sigterm.py, on shorter audio: finishing 2 x 600 s here would add minutes).
    deadline = time.monotonic() + 60
    while not all(_started(second, rid) for rid in request_ids):
        assert time.monotonic() < deadline, f"the second worker did not start both jobs: {second.log_text()}"
        time.sleep(0.2)
