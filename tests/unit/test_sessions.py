"""Live-session coordination in a real Redis: exactly one owner, abandon vs claim, the stream and the leases."""

from __future__ import annotations

import threading
import time

import redis

from hark.schemas import TranscriptionOptions
from hark.sessions import ENTRY_AUDIO, ENTRY_CLOSE, Envelope, SessionStore, StreamParams, StreamTask, new_session_id


def _task(deployment: str) -> StreamTask:
    return StreamTask(session_id=new_session_id(), deployment=deployment, checkpoint="whisper-tiny-en",
                      params=StreamParams(), options=TranscriptionOptions(language="en"), created_at=time.time(),
                      start_timeout=5)  # fmt: skip


def test_exactly_one_worker_claims_a_session(redis_client: redis.Redis, deployment: str) -> None:
    store = SessionStore(redis_client, deployment, lease_seconds=2, ttl_seconds=60)
    task = _task(deployment)
    store.create(task, "api-1")
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def claim(worker: str) -> None:
        barrier.wait()
        if store.claim(task.session_id, worker):
            wins.append(worker)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert store.state(task.session_id) == "running"
    assert not store.abandon(task.session_id), "a claimed session cannot be abandoned"
    assert store.renew_owner(task.session_id, wins[0])
    assert not store.renew_owner(task.session_id, "someone-else")


def test_an_abandoned_session_is_never_claimed(redis_client: redis.Redis, deployment: str) -> None:
    store = SessionStore(redis_client, deployment, lease_seconds=2, ttl_seconds=60)
    task = _task(deployment)
    store.create(task, "api-1")
    assert store.abandon(task.session_id)
    assert not store.claim(task.session_id, "late-worker")
    assert store.state(task.session_id) == "abandoned"


def test_stream_order_trim_and_backlog(redis_client: redis.Redis, deployment: str) -> None:
    store = SessionStore(redis_client, deployment, lease_seconds=2, ttl_seconds=60)
    sid = _task(deployment).session_id
    for index in range(5):
        store.push(sid, ENTRY_AUDIO, bytes([index]) * 100)
    store.push(sid, ENTRY_CLOSE)
    entries = store.read(sid, "0", block_ms=10, count=3)
    assert [fields[b"d"][0] for _id, fields in entries] == [0, 1, 2]
    store.mark_read(sid, entries[-1][0], 300)
    assert redis_client.xlen(store.audio_key(sid)) == 3, "what was read is trimmed"
    assert store.read_bytes(sid) == 300
    rest = store.read(sid, entries[-1][0], block_ms=10)
    assert [fields[b"k"] for _id, fields in rest] == [b"a", b"a", b"close"]
    assert store.read(sid, rest[-1][0], block_ms=10) == []


def test_leases_expire_and_end_drops_the_keys(redis_client: redis.Redis, deployment: str) -> None:
    store = SessionStore(redis_client, deployment, lease_seconds=1, ttl_seconds=60)
    task = _task(deployment)
    store.create(task, "api-1")
    assert store.claim(task.session_id, "w1")
    assert store.client_alive(task.session_id) and store.owner_alive(task.session_id)
    time.sleep(1.2)
    assert not store.client_alive(task.session_id) and not store.owner_alive(task.session_id)
    store.push(task.session_id, ENTRY_AUDIO, b"xx")
    store.end(task.session_id)
    assert not redis_client.exists(store.audio_key(task.session_id))
    assert store.state(task.session_id) == "ended"
    store.push(task.session_id, ENTRY_AUDIO, b"late")  # a frame after the end must not leave a key forever
    assert 0 < redis_client.ttl(store.audio_key(task.session_id)) <= 60


def test_envelopes_reach_a_subscriber(redis_client: redis.Redis, deployment: str) -> None:
    store = SessionStore(redis_client, deployment, lease_seconds=1, ttl_seconds=60)
    sid = _task(deployment).session_id
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(store.channel(sid))
    assert store.publish(sid, Envelope(kind="ready")) == 1
    message = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
    assert message is not None
    assert Envelope.model_validate_json(message["data"]).kind == "ready"
    pubsub.close()
