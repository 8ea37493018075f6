"""JobStore deadlines and single ending, and one reaper pass, on the session's real Redis (the reaper's
lock is a Lua-released redis-py lock); the e2e test runs the reaper thread in a real worker."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from hark.jobs import JobStore
from hark.schemas import JobFailure
from workers.reaper import Reaper

HOOK = {"url": "http://127.0.0.1:9/hook", "method": "POST"}


@pytest.fixture
def store(redis_client: redis.Redis, deployment: str) -> JobStore:
    return JobStore(redis_client, deployment, result_ttl=600, audio_ttl=600, deadline=30)


def test_a_job_is_indexed_until_it_ends(store: JobStore) -> None:
    before = time.time()
    store.create("r1")
    score = store.redis.zscore(store.deadlines_key, "r1")
    assert score is not None and before + 30 <= score <= time.time() + 30
    assert store.overdue(now=before + 29) == [] and store.overdue(now=before + 31) == ["r1"]
    assert store.mark_processing("r1", "w1") and store.redis.zscore(store.deadlines_key, "r1") is not None
    assert store.complete("r1", {"transcription": "hi"})
    assert store.redis.zscore(store.deadlines_key, "r1") is None


def test_no_deadline_no_index(redis_client: redis.Redis, deployment: str) -> None:
    plain = JobStore(redis_client, deployment, 600, 600)
    plain.create("r1")
    assert plain.redis.zcard(plain.deadlines_key) == 0


def test_a_job_ends_once(store: JobStore) -> None:
    store.create("r1")
    assert store.fail("r1", JobFailure(code="job_lost", message="lost", http_status=504))
    assert not store.complete("r1", {"transcription": "late"}), "a late answer must not overwrite the failure"
    assert not store.mark_processing("r1", "w2"), "a redelivered copy must not reopen it"
    assert not store.mark_queued("r1")
    state = store.get("r1") or {}
    assert state["status"] == "failed" and state["error"]["code"] == "job_lost" and "result" not in state


def test_attempts_are_counted(store: JobStore) -> None:
    store.create("r1")
    store.mark_processing("r1", "w1")
    store.mark_queued("r1")
    store.mark_processing("r1", "w2")
    state = store.get("r1") or {}
    assert (state["attempts"], state["worker_id"], state["status"]) == (2, "w2", "processing")


class Sent:
    def __init__(self, fail: int = 0) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    def __call__(self, request_id: str, target: dict[str, Any]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("broker down")
        self.calls.append((request_id, target))


def test_the_reaper_fails_overdue_jobs_drops_their_audio_and_queues_their_webhook(store: JobStore) -> None:
    sent = Sent()
    store.stage_audio("lost", b"audio")
    store.create("lost", webhook=HOOK)
    store.mark_processing("lost", "w1")
    store.create("quiet")
    store.create("fresh")
    store.redis.zadd(store.deadlines_key, {"fresh": time.time() + 600})
    reaper = Reaper(store, sent, interval=1, deadline_seconds=30)
    assert reaper.run_once(now=time.time() + 31) == 2
    lost = store.get("lost") or {}
    assert lost["status"] == "failed" and lost["error"]["code"] == "job_lost" and lost["error"]["http_status"] == 504
    assert "HARK_JOB_DEADLINE_SECONDS" in lost["error"]["message"]
    assert store.fetch_audio(store.audio_key("lost")) is None
    assert sent.calls == [("lost", HOOK)]
    assert (store.get("quiet") or {})["status"] == "failed"
    assert (store.get("fresh") or {})["status"] == "queued"
    assert store.overdue(now=time.time() + 31) == []
    assert store.redis.blpop([store.reply_key("lost")], timeout=1) is not None, "a waiting request must wake"


def test_the_reaper_leaves_answered_jobs_alone(store: JobStore) -> None:
    store.create("done")
    store.redis.zadd(store.deadlines_key, {"done": 0})  # e.g. answered while the pass ran
    store.complete("done", {"transcription": "ok"})
    store.redis.zadd(store.deadlines_key, {"done": 0})
    assert Reaper(store, Sent(), interval=1, deadline_seconds=30).run_once() == 0
    assert (store.get("done") or {})["status"] == "success"
    assert store.overdue() == []


def test_the_reaper_retries_a_webhook_it_could_not_queue(store: JobStore) -> None:
    sent = Sent(fail=1)
    store.create("lost", webhook=HOOK)
    reaper = Reaper(store, sent, interval=1, deadline_seconds=30)
    assert reaper.run_once(now=time.time() + 31) == 1
    assert sent.calls == [] and store.overdue(now=time.time() + 2) == ["lost"], "kept for the next pass"
    assert reaper.run_once(now=time.time() + 2) == 0
    assert sent.calls == [("lost", HOOK)] and store.overdue(now=time.time() + 60) == []


def test_one_reaper_per_deployment_at_a_time(store: JobStore) -> None:
    store.create("lost")
    other = store.redis.lock(f"hark:{store.deployment}:reaper:lock", timeout=30)
    assert other.acquire(blocking=False)
    reaper = Reaper(store, Sent(), interval=1, deadline_seconds=30)
    assert reaper.run_once(now=time.time() + 31) == 0 and (store.get("lost") or {})["status"] == "queued"
    other.release()
    assert reaper.run_once(now=time.time() + 31) == 1
