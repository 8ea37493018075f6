"""The transcription task never acknowledges a job it could not answer: Redis failures, a webhook that
cannot be queued and a draining worker all requeue the message; a job ends once (fakeredis, fake engine)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
from celery.exceptions import Reject

from hark.schemas import CheckpointInfo, JobFailure, TranscribeTask, TranscriptionOptions
from hark.settings import load_settings
from tests.audio import AudioFactory
from workers import context as worker_context
from workers import tasks
from workers.context import WorkerContext, make_store
from workers.executor import CheckpointExecutor
from workers.transcript import SegmentOut, Transcript

CHECKPOINT = CheckpointInfo(name="whisper-tiny-en", version="1.0.0", languages=["en"], multilingual=False)
HOOK = {"url": "http://127.0.0.1:9/hook", "method": "POST"}


class HookEngine:
    """Returns a fixed transcript after running `during` (the test's hook into the middle of a job)."""

    def __init__(self, during: Callable[[], None] = lambda: None) -> None:
        self.during = during

    def transcribe(self, *_args: Any, **_kwargs: Any) -> Transcript:
        self.during()
        return Transcript(text="hello", language="en", language_probability=1.0, duration=1.0,
                          segments=[SegmentOut("hello", 0.0, 1.0)], words=[])  # fmt: skip


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def context(server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerContext]:
    # The real policy retries for a minute (HARK_STORE_RETRY_SECONDS); a short window keeps the same shape.
    settings = load_settings(deployment="dep", max_audio_seconds=20, store_retry_seconds=0.01)
    client = fakeredis.FakeRedis(server=server)
    executor = CheckpointExecutor(HookEngine(), slots=2, lanes=1)
    context = WorkerContext(settings=settings, redis=client, store=make_store(settings, client), worker_id="w1",
                            checkpoint=CHECKPOINT, executor=executor)  # fmt: skip
    worker_context.install(context)
    yield context
    worker_context.clear()
    executor.close(wait=False)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks.app, "send_task", lambda name, **kw: calls.append({"name": name, **kw}))
    return calls


def _job(context: WorkerContext, audio: AudioFactory, rid: str = "req_1", **fields: Any) -> dict[str, Any]:
    data = audio.english(1).read_bytes()
    key = context.store.stage_audio(rid, data)
    context.store.create(rid, checkpoint=CHECKPOINT.name, **fields)
    return TranscribeTask(request_id=rid, deployment="dep", checkpoint=CHECKPOINT.name, audio_key=key,
                          file_size=len(data), options=TranscriptionOptions(language="en"),
                          submitted_at=time.time()).wire()  # fmt: skip


def _use_engine(context: WorkerContext, engine: HookEngine, slots: int = 2) -> None:
    assert context.executor is not None
    context.executor.close(wait=False)
    context.executor = CheckpointExecutor(engine, slots=slots, lanes=1)


def test_redis_down_while_storing_the_result_requeues_the_job(context: WorkerContext, server: fakeredis.FakeServer,
                                                              audio: AudioFactory, sent: list) -> None:  # fmt: skip
    payload = _job(context, audio)
    _use_engine(context, HookEngine(during=lambda: setattr(server, "connected", False)))
    with pytest.raises(Reject) as rejected:
        tasks.transcribe(payload)
    assert rejected.value.requeue, "an unrecorded answer must go back to the queue, not be acknowledged"
    server.connected = True
    assert (context.store.get("req_1") or {})["status"] == "processing"
    assert context.store.fetch_audio(payload["audio_key"]) is not None, "the audio is kept for the next attempt"

    _use_engine(context, HookEngine())
    tasks.transcribe(payload)  # the redelivered message
    state = context.store.get("req_1") or {}
    assert state["status"] == "success" and state["attempts"] == 2


def test_redis_down_when_the_job_starts_requeues_it(context: WorkerContext, server: fakeredis.FakeServer,
                                                    audio: AudioFactory, sent: list) -> None:  # fmt: skip
    payload = _job(context, audio)
    server.connected = False
    with pytest.raises(Reject) as rejected:
        tasks.transcribe(payload)
    assert rejected.value.requeue


def test_a_webhook_that_cannot_be_queued_requeues_and_the_copy_only_queues_it(
    context: WorkerContext, audio: AudioFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = _job(context, audio, webhook=HOOK)
    calls: list[dict[str, Any]] = []

    def broken(name: str, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.app, "send_task", broken)
    with pytest.raises(Reject) as rejected:
        tasks.transcribe(payload)
    assert rejected.value.requeue and (context.store.get("req_1") or {})["status"] == "success"

    monkeypatch.setattr(tasks.app, "send_task", lambda name, **kw: calls.append({"name": name, **kw}))
    assert tasks.handle_transcription(context, TranscribeTask.model_validate(payload)) == "skipped"
    assert [c["kwargs"]["request_id"] for c in calls] == ["req_1"]
    assert calls[0]["queue"] == "hark.dep.webhooks"


def test_a_job_reaped_while_it_ran_keeps_the_reapers_answer(context: WorkerContext, audio: AudioFactory,
                                                            sent: list) -> None:  # fmt: skip
    payload = _job(context, audio, webhook=HOOK)
    lost = JobFailure(code="job_lost", message="lost", http_status=504)
    _use_engine(context, HookEngine(during=lambda: context.store.fail("req_1", lost)))
    assert tasks.handle_transcription(context, TranscribeTask.model_validate(payload)) == "skipped"
    state = context.store.get("req_1") or {}
    assert state["status"] == "failed" and state["error"]["code"] == "job_lost"
    assert sent == [], "the reaper queues the webhook of the answer that stands"


def test_a_draining_worker_hands_waiting_and_running_jobs_back(context: WorkerContext, audio: AudioFactory,
                                                                sent: list) -> None:  # fmt: skip
    release = threading.Event()
    _use_engine(context, HookEngine(during=lambda: release.wait(10)))
    payloads = {rid: _job(context, audio, rid) for rid in ("req_1", "req_2")}
    outcomes: dict[str, tuple[str, float]] = {}

    def run(rid: str) -> None:
        task = TranscribeTask.model_validate(payloads[rid])
        outcomes[rid] = (tasks.handle_transcription(context, task), time.monotonic())

    threads = [threading.Thread(target=run, args=(rid,)) for rid in payloads]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while context.executor.in_flight < 2 or context.executor.running < 1:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    context.executor.begin_drain(0.5)  # type: ignore[union-attr]
    for thread in threads:
        thread.join(timeout=5)
    release.set()
    assert {rid: kind for rid, (kind, _) in outcomes.items()} == {"req_1": "requeued", "req_2": "requeued"}
    waits = sorted(at - started for _, at in outcomes.values())
    assert waits[0] < 0.3, f"the job waiting for the lane must be handed back at once: {waits}"
    assert 0.4 < waits[1] < 2, f"the running job must get the grace period, then be handed back: {waits}"
    copies = {c["task_id"]: c for c in sent}
    assert set(copies) == {"req_1", "req_2"}
    for rid, copy in copies.items():
        assert copy["name"] == "hark.transcribe" and copy["queue"] == "hark.dep.whisper-tiny-en"
        assert copy["kwargs"]["payload"] == payloads[rid]
        assert (context.store.get(rid) or {})["status"] == "queued"


def test_a_draining_worker_that_cannot_send_the_copy_rejects_with_requeue(
    context: WorkerContext, audio: AudioFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.app, "send_task", broken)
    payload = _job(context, audio)
    context.executor.begin_drain(0)  # type: ignore[union-attr]
    with pytest.raises(Reject) as rejected:
        tasks.transcribe(payload)
    assert rejected.value.requeue
