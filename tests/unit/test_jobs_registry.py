"""hark.jobs.JobStore and hark.registry on fakeredis (pure key logic; the e2e tests use a real Redis)."""

from __future__ import annotations

import json
import threading
import time

import fakeredis
import pytest

from hark import registry
from hark.jobs import JobStore
from hark.schemas import CheckpointInfo, InstanceRecord, JobFailure

TINY_EN = CheckpointInfo(name="whisper-tiny-en", version="1.0.0", languages=["en"], multilingual=False)
BASE = CheckpointInfo(name="whisper-base", version="1.0.0", languages=["en", "de"], multilingual=True)


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> JobStore:
    return JobStore(client, "dep", result_ttl=600, audio_ttl=120)


def record(
    checkpoint: CheckpointInfo, worker: str = "w1", deployment: str = "dep", in_flight: int = 0
) -> InstanceRecord:
    now = time.time()
    return InstanceRecord(deployment=deployment, worker_id=worker, host="host", pid=42,
                          queue=f"hark.{deployment}.{checkpoint.name}", checkpoint=checkpoint, slots=4,
                          in_flight=in_flight, started_at=now, heartbeat_at=now)  # fmt: skip


# --- JobStore ------------------------------------------------------------------------------------


def test_audio_is_staged_once_with_a_ttl_and_dropped(store: JobStore, client: fakeredis.FakeRedis) -> None:
    key = store.stage_audio("r1", b"RIFF....")
    assert key == "hark:dep:audio:r1"
    assert store.fetch_audio(key) == b"RIFF...."
    assert 0 < client.ttl(key) <= 120
    store.drop_audio(key)
    assert store.fetch_audio(key) is None


def test_job_lifecycle(store: JobStore, client: fakeredis.FakeRedis) -> None:
    store.create("r1", checkpoint="whisper-tiny-en@1.0.0")
    state = store.get("r1")
    assert state is not None
    assert state["status"] == "queued" and state["request_id"] == "r1"
    assert state["checkpoint"] == "whisper-tiny-en@1.0.0"
    assert 0 < client.ttl(store.job_key("r1")) <= 600
    assert not store.is_finished("r1")

    store.mark_processing("r1", "worker-7")
    state = store.get("r1")
    assert state["status"] == "processing" and state["worker_id"] == "worker-7"
    assert state["checkpoint"] == "whisper-tiny-en@1.0.0", "updates keep earlier fields"

    store.complete("r1", {"transcription": "hello"})
    state = store.get("r1")
    assert state["status"] == "success" and state["result"] == {"transcription": "hello"}
    assert store.is_finished("r1")
    assert 0 < client.ttl(store.reply_key("r1")) <= 600
    assert json.loads(client.lrange(store.reply_key("r1"), 0, -1)[0]) == {"status": "success"}


def test_failure_is_stored_with_its_http_status(store: JobStore) -> None:
    store.create("r2")
    store.fail("r2", JobFailure(code="bad_audio", message="cannot decode", http_status=400))
    state = store.get("r2")
    assert state["status"] == "failed"
    assert state["error"] == {"code": "bad_audio", "message": "cannot decode", "http_status": 400, "details": []}
    assert store.is_finished("r2")


def test_unknown_job(store: JobStore) -> None:
    assert store.get("nope") is None
    assert not store.is_finished("nope")


def test_wait_returns_at_once_for_a_finished_job(store: JobStore) -> None:
    store.create("r3")
    store.complete("r3", {"transcription": "x"})
    started = time.monotonic()
    state = store.wait("r3", timeout=5)
    assert state is not None and state["status"] == "success"
    assert time.monotonic() - started < 0.5


def test_wait_times_out_with_none(store: JobStore) -> None:
    store.create("r4")
    started = time.monotonic()
    assert store.wait("r4", timeout=0.3) is None
    took = time.monotonic() - started
    assert 0.25 <= took < 2.0, took


def test_wait_wakes_when_the_worker_answers(store: JobStore) -> None:
    store.create("r5")
    timer = threading.Timer(0.3, store.complete, args=("r5", {"transcription": "late"}))
    timer.start()
    try:
        started = time.monotonic()
        state = store.wait("r5", timeout=10)
        assert state is not None and state["result"] == {"transcription": "late"}
        assert time.monotonic() - started < 5
    finally:
        timer.cancel()


def test_two_waiters_both_wake(store: JobStore) -> None:
    store.create("r6")
    results: list[dict | None] = []
    waiters = [threading.Thread(target=lambda: results.append(store.wait("r6", timeout=10))) for _ in range(2)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.2)
    store.fail("r6", JobFailure(code="x", message="y", http_status=500))
    for waiter in waiters:
        waiter.join(timeout=10)
    assert len(results) == 2 and all(r is not None and r["status"] == "failed" for r in results)


def test_results_expire(client: fakeredis.FakeRedis) -> None:
    store = JobStore(client, "dep", result_ttl=1, audio_ttl=1)
    store.create("r7")
    key = store.stage_audio("r7", b"x")
    time.sleep(1.2)
    assert store.get("r7") is None
    assert store.fetch_audio(key) is None


def test_deployments_do_not_share_jobs(client: fakeredis.FakeRedis) -> None:
    one, two = JobStore(client, "one", 600, 600), JobStore(client, "two", 600, 600)
    one.create("same-id")
    assert two.get("same-id") is None
    assert one.job_key("same-id") != two.job_key("same-id")


# --- registry ------------------------------------------------------------------------------------


def test_announce_then_live_and_catalog(client: fakeredis.FakeRedis) -> None:
    registry.announce(client, record(TINY_EN), ttl_seconds=5)
    registry.announce(client, record(BASE), ttl_seconds=5)
    live = registry.live_instances(client, "dep")
    assert sorted(i.checkpoint.name for i in live) == ["whisper-base", "whisper-tiny-en"]
    assert sorted(c.name for c in registry.catalog(client, "dep")) == ["whisper-base", "whisper-tiny-en"]


def test_heartbeat_renews_the_record(client: fakeredis.FakeRedis) -> None:
    registry.announce(client, record(TINY_EN, in_flight=0), ttl_seconds=5)
    registry.announce(client, record(TINY_EN, in_flight=3), ttl_seconds=5)
    (live,) = registry.live_instances(client, "dep")
    assert live.in_flight == 3


def test_expired_instance_disappears_but_stays_in_the_catalog(client: fakeredis.FakeRedis) -> None:
    registry.announce(client, record(TINY_EN), ttl_seconds=0.2)
    assert registry.live_instances(client, "dep")
    time.sleep(0.35)
    assert registry.live_instances(client, "dep") == []
    assert client.scard("hark:dep:instances") == 0, "expired members are pruned from the index"
    assert [c.name for c in registry.catalog(client, "dep")] == ["whisper-tiny-en"]
    assert 0 < client.ttl("hark:dep:catalog") <= registry.CATALOG_TTL_SECONDS


def test_withdraw_is_immediate(client: fakeredis.FakeRedis) -> None:
    registry.announce(client, record(TINY_EN, worker="w1"), ttl_seconds=60)
    registry.announce(client, record(TINY_EN, worker="w2"), ttl_seconds=60)
    registry.withdraw(client, "dep", "w1", "whisper-tiny-en")
    assert [i.worker_id for i in registry.live_instances(client, "dep")] == ["w2"]


def test_registry_is_per_deployment(client: fakeredis.FakeRedis) -> None:
    registry.announce(client, record(TINY_EN, deployment="one"), ttl_seconds=60)
    registry.announce(client, record(BASE, deployment="two"), ttl_seconds=60)
    assert [i.checkpoint.name for i in registry.live_instances(client, "one")] == ["whisper-tiny-en"]
    assert [c.name for c in registry.catalog(client, "two")] == ["whisper-base"]
    assert registry.live_instances(client, "three") == [] and registry.catalog(client, "three") == []


def test_group_by_worker() -> None:
    grouped = registry.group_by_worker([record(TINY_EN, "w1"), record(BASE, "w1"), record(TINY_EN, "w2")])
    assert {k: [i.checkpoint.name for i in v] for k, v in grouped.items()} == {
        "w1": ["whisper-tiny-en", "whisper-base"],
        "w2": ["whisper-tiny-en"],
    }
