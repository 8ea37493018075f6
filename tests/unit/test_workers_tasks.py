"""workers.tasks.handle_transcription: job flow on fakeredis with a fake engine (pure logic; the e2e
tests run the real task in a real worker)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fakeredis
import pytest
from celery.exceptions import Reject

from hark.schemas import (
    CheckpointInfo,
    Keyword,
    TranscribeTask,
    TranscriptionOptions,
    TranscriptionResponse,
    WebhookTarget,
)
from hark.settings import load_settings
from tests.audio import AudioFactory
from workers import tasks
from workers.audio import AudioSource
from workers.context import WorkerContext, make_store
from workers.executor import CancelToken, CheckpointExecutor
from workers.transcript import SegmentOut, Transcript, WordOut

CHECKPOINT = CheckpointInfo(name="whisper-tiny-en", version="1.0.0", languages=["en"], multilingual=False)


def read_all(audio: AudioSource) -> int:
    """Decode the whole source (in bounded pieces, as the real engine does); the sample count."""
    total = 0
    while size := audio.read(16000).size:
        total += size
    return total


class FakeEngine:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: list[TranscriptionOptions] = []

    def transcribe(self, audio: AudioSource, options: TranscriptionOptions, cancel: CancelToken) -> Transcript:
        self.seen.append(options)
        if self.fail:
            raise RuntimeError("boom")
        duration = read_all(audio) / 16000
        return Transcript(text="hello world", language="en", language_probability=1.0, duration=duration,
                          segments=[SegmentOut("hello world", 0.0, 0.9)],
                          words=[WordOut("hello", 0.0, 0.4, 0.9), WordOut("world", 0.4, 0.9, 0.8)])  # fmt: skip


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks.app, "send_task", lambda name, **kw: calls.append({"name": name, **kw}))
    return calls


@pytest.fixture
def context() -> Iterator[WorkerContext]:
    settings = load_settings(deployment="dep", max_audio_seconds=20)
    client = fakeredis.FakeRedis()
    executor = CheckpointExecutor(FakeEngine(), slots=2, lanes=1)
    yield WorkerContext(settings=settings, redis=client, store=make_store(settings, client), worker_id="host-1",
                        checkpoint=CHECKPOINT, executor=executor)  # fmt: skip
    executor.close()


def _submit(context: WorkerContext, data: bytes, rid: str = "req_1", **options: Any) -> TranscribeTask:
    key = context.store.stage_audio(rid, data)
    context.store.create(rid, checkpoint=CHECKPOINT.name)
    return TranscribeTask(request_id=rid, deployment="dep", checkpoint=CHECKPOINT.name, audio_key=key,
                          file_size=len(data), options=TranscriptionOptions(**options),
                          submitted_at=time.time())  # fmt: skip


def test_success_publishes_the_pulse_answer(context: WorkerContext, audio: AudioFactory, sent: list) -> None:
    data = audio.english(1).read_bytes()
    task = _submit(context, data, language="en", word_timestamps=True, keywords=[Keyword(word="pizza")])
    assert tasks.handle_transcription(context, task) == "success"
    state = context.store.get("req_1")
    assert state is not None and state["status"] == "success" and state["worker_id"] == "host-1"
    result = TranscriptionResponse.model_validate(state["result"])
    assert result.transcription == "hello world" and result.request_id == "req_1"
    assert [w.word for w in result.words or []] == ["hello", "world"]
    assert result.words and result.words[0].confidence == 0.9
    assert [u.text for u in result.utterances or []] == ["hello world"]
    meta = result.metadata
    assert meta.file_size == len(data) and meta.deployment == "dep" and meta.checkpoint == "whisper-tiny-en@1.0.0"
    assert meta.duration > 1 and meta.processing_time_ms >= 0 and meta.rtfx > 0
    assert "speaker" not in str(state["result"])
    assert context.store.fetch_audio(task.audio_key) is None, "audio must be dropped after the answer"
    assert sent == []  # no webhook asked


def test_words_only_when_asked(context: WorkerContext, audio: AudioFactory, sent: list) -> None:
    task = _submit(context, audio.english(1).read_bytes(), language="en")
    tasks.handle_transcription(context, task)
    assert "words" not in (context.store.get("req_1") or {})["result"]


def test_bad_audio_is_a_400_failure(context: WorkerContext, audio: AudioFactory, sent: list) -> None:
    task = _submit(context, audio.truncated(audio.english(1)).read_bytes(), language="en")
    assert tasks.handle_transcription(context, task) == "failed"
    error = (context.store.get("req_1") or {})["error"]
    assert error["http_status"] == 400 and error["code"] == "truncated_audio"
    assert context.store.fetch_audio(task.audio_key) is None


def test_too_long_audio(context: WorkerContext, audio: AudioFactory, sent: list) -> None:
    task = _submit(context, audio.silence(25.0).read_bytes(), language="en")
    tasks.handle_transcription(context, task)
    assert (context.store.get("req_1") or {})["error"]["code"] == "audio_too_long"


def test_expired_audio(context: WorkerContext, sent: list) -> None:
    task = _submit(context, b"RIFF")
    context.store.drop_audio(task.audio_key)
    tasks.handle_transcription(context, task)
    error = (context.store.get("req_1") or {})["error"]
    assert error["code"] == "audio_expired" and error["http_status"] == 410 and "again" in error["message"]


def test_engine_crash_is_a_500_failure(context: WorkerContext, audio: AudioFactory, sent: list) -> None:
    context.executor = CheckpointExecutor(FakeEngine(fail=True), slots=1, lanes=1)
    task = _submit(context, audio.english(1).read_bytes(), language="en")
    assert tasks.handle_transcription(context, task) == "failed"
    error = (context.store.get("req_1") or {})["error"]
    assert error["http_status"] == 500 and error["code"] == "internal_error" and "req_1" in error["message"]
    context.executor.close()


def test_redelivered_finished_job_is_skipped(context: WorkerContext, audio: AudioFactory, sent: list) -> None:
    data = audio.english(1).read_bytes()
    task = _submit(context, data, language="en")
    tasks.handle_transcription(context, task)
    first = context.store.get("req_1")
    context.store.stage_audio("req_1", data)  # a second copy: the skip must drop it too
    assert tasks.handle_transcription(context, task, redelivered=True) == "skipped"
    assert context.store.get("req_1") == first
    assert context.store.fetch_audio(task.audio_key) is None


def test_webhook_is_queued_after_the_answer(context: WorkerContext, audio: AudioFactory, sent: list) -> None:
    task = _submit(context, audio.english(1).read_bytes(), language="en")
    task = task.model_copy(update={"webhook": WebhookTarget(url="http://127.0.0.1:9/hook", extra="x")})
    tasks.handle_transcription(context, task)
    assert sent == [{"name": "hark.deliver_webhook", "queue": "hark.dep.webhooks",
                     "kwargs": {"request_id": "req_1", "webhook": {"url": "http://127.0.0.1:9/hook",
                                                                   "method": "POST", "extra": "x"}}}]  # fmt: skip


def test_webhook_from_the_job_state_also_for_failures(context: WorkerContext, sent: list) -> None:
    task = _submit(context, b"not audio at all" * 10)
    context.store.create("req_1", webhook={"url": "http://127.0.0.1:9/hook", "method": "GET"})
    tasks.handle_transcription(context, task)
    assert sent and sent[0]["kwargs"]["request_id"] == "req_1"


def test_full_slots_requeue_the_message(context: WorkerContext, audio: AudioFactory, sent: list) -> None:
    task = _submit(context, audio.english(1).read_bytes(), language="en")
    assert context.executor is not None
    with context.executor.admit(), context.executor.admit(), pytest.raises(Reject):
        tasks.handle_transcription(context, task)
    assert (context.store.get("req_1") or {})["status"] == "queued"
    assert context.store.fetch_audio(task.audio_key) is not None


def test_misrouted_job(context: WorkerContext, sent: list) -> None:
    task = _submit(context, b"x").model_copy(update={"checkpoint": "whisper-base"})
    tasks.handle_transcription(context, task)
    assert (context.store.get("req_1") or {})["error"]["code"] == "misrouted"


def test_job_over_the_time_limit_is_answered(context: WorkerContext, audio: AudioFactory, sent: list) -> None:
    class SlowEngine(FakeEngine):
        def transcribe(self, audio: AudioSource, options: TranscriptionOptions, cancel: CancelToken) -> Transcript:
            time.sleep(0.5)
            return super().transcribe(audio, options, cancel)

    # model_copy skips validation: 0.2 s is below the setting's floor, to keep the test short.
    context.settings = context.settings.model_copy(update={"job_timeout_seconds": 0.2})
    context.executor = CheckpointExecutor(SlowEngine(), slots=1, lanes=1)
    task = _submit(context, audio.english(1).read_bytes(), language="en")
    assert tasks.handle_transcription(context, task) == "failed"
    error = (context.store.get("req_1") or {})["error"]
    assert error["code"] == "job_timeout" and error["http_status"] == 504
    assert "HARK_JOB_TIMEOUT_SECONDS" in error["message"]
    context.executor.close()


class SteppingEngine(FakeEngine):
    """Takes `steps` × 20 ms, checking the cancel token between steps as the real engine does between
    windows and segments."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.finished_at: list[float] = []

    def transcribe(self, audio: AudioSource, options: TranscriptionOptions,
                   cancel: CancelToken | None = None) -> Transcript:  # fmt: skip
        try:
            for _ in range(self.steps):
                if cancel is not None:
                    cancel.check()
                time.sleep(0.02)
            return super().transcribe(audio, options, cancel)  # type: ignore[arg-type]
        finally:
            self.finished_at.append(time.monotonic())


def test_waiting_for_a_lane_does_not_count_against_the_job_timeout(context: WorkerContext, audio: AudioFactory,
                                                                   sent: list) -> None:  # fmt: skip
    # model_copy skips validation: 0.6 s is below the setting's floor, to keep the test short.
    context.settings = context.settings.model_copy(update={"job_timeout_seconds": 0.6})
    context.executor = CheckpointExecutor(SteppingEngine(steps=20), slots=2, lanes=1)  # 0.4 s per job
    data = audio.english(1).read_bytes()
    first, second = _submit(context, data, "req_a", language="en"), _submit(context, data, "req_b", language="en")
    with ThreadPoolExecutor(2) as callers:
        outcomes = list(callers.map(lambda task: tasks.handle_transcription(context, task), [first, second]))
    # The second job waits ~0.4 s for the lane, then runs 0.4 s: within its 0.6 s, which starts on the lane.
    assert outcomes == ["success", "success"], [context.store.get(r) for r in ("req_a", "req_b")]
    context.executor.close()


def test_a_timed_out_job_frees_its_lane(context: WorkerContext, audio: AudioFactory, sent: list) -> None:
    context.settings = context.settings.model_copy(update={"job_timeout_seconds": 0.2})
    engine = SteppingEngine(steps=250)  # 5 s unless cancelled
    context.executor = CheckpointExecutor(engine, slots=1, lanes=1)
    task = _submit(context, audio.english(1).read_bytes(), language="en")
    assert tasks.handle_transcription(context, task) == "failed"
    assert (context.store.get("req_1") or {})["error"]["code"] == "job_timeout"
    answered = time.monotonic()
    while context.executor.running and time.monotonic() < answered + 1.0:
        time.sleep(0.01)
    assert context.executor.running == 0, "the timed-out engine call still burns its lane"
    assert engine.finished_at and engine.finished_at[0] - answered < 0.5
    context.executor.close()


def test_a_container_outside_the_allow_list_is_a_400_in_milliseconds(context: WorkerContext, sent: list) -> None:
    sdp = b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 0\n"
    task = _submit(context, sdp, language="en")
    started = time.perf_counter()
    assert tasks.handle_transcription(context, task) == "failed"
    assert time.perf_counter() - started < 0.5
    error = (context.store.get("req_1") or {})["error"]
    assert error["http_status"] == 400 and error["code"] == "unsupported_container"
