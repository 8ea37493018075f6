"""workers.executor: slot admission, lane concurrency, time budgets, cancellation and draining, with fake
engines (pure logic)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from hark.schemas import TranscriptionOptions
from tests.audio import AudioFactory
from workers.audio import AudioSource, EncodedAudio, PcmAudio
from workers.executor import (
    CancelToken,
    CheckpointExecutor,
    ExecutorClosed,
    ExecutorDraining,
    SlotsExhausted,
    SubmissionCancelled,
    SubmissionTimeout,
)
from workers.transcript import Transcript

OPTIONS = TranscriptionOptions(language="en")


def pcm() -> PcmAudio:
    """0.1 s of silence (a fresh source per call: a source is read once)."""
    return PcmAudio(np.zeros(1600, dtype=np.float32))


def read_all(audio: AudioSource) -> int:
    total = 0
    while piece := audio.read(16000).size:
        total += piece
    return total


class FakeEngine:
    """Sleeps a little per call and records how many calls overlapped."""

    def __init__(self, seconds: float = 0.05, fail: bool = False) -> None:
        self.seconds = seconds
        self.fail = fail
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.calls = 0

    def transcribe(self, audio: AudioSource, options: TranscriptionOptions, cancel: CancelToken) -> Transcript:
        with self.lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.seconds)
            if self.fail:
                raise RuntimeError("engine broke")
            return Transcript(text="ok", language=options.language or "en", language_probability=1.0,
                              duration=read_all(audio) / 16000)  # fmt: skip
        finally:
            with self.lock:
                self.active -= 1


def test_run_returns_the_transcript_and_frees_the_slot() -> None:
    with CheckpointExecutor(FakeEngine(0), slots=2, lanes=1) as executor:
        transcript = executor.run(pcm(), OPTIONS)
        assert transcript.text == "ok" and transcript.duration == pytest.approx(0.1)
        assert executor.in_flight == 0 and executor.running == 0


def test_lanes_bound_concurrent_engine_calls() -> None:
    engine = FakeEngine(0.05)
    with CheckpointExecutor(engine, slots=8, lanes=2) as executor, ThreadPoolExecutor(8) as callers:
        results = list(callers.map(lambda _: executor.run(pcm(), OPTIONS), range(8)))
    assert [r.text for r in results] == ["ok"] * 8
    assert engine.calls == 8
    assert engine.max_active == 2 and executor.peak_running == 2
    assert executor.peak_in_flight <= 8


def test_admission_beyond_the_slots_is_refused() -> None:
    with CheckpointExecutor(FakeEngine(0), slots=2, lanes=1) as executor:
        with executor.admit(), executor.admit():
            assert executor.in_flight == 2
            with pytest.raises(SlotsExhausted, match="2 slots"), executor.admit():
                pass
            assert executor.in_flight == 2
        assert executor.in_flight == 0
        with executor.admit():  # free again
            assert executor.in_flight == 1


def test_in_flight_counts_admitted_requests_across_threads() -> None:
    engine = FakeEngine(0.1)
    executor = CheckpointExecutor(engine, slots=3, lanes=1)
    seen: list[int] = []
    try:
        with ThreadPoolExecutor(3) as callers:
            futures = [callers.submit(lambda: executor.run(pcm(), OPTIONS)) for _ in range(3)]
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and not all(f.done() for f in futures):
                seen.append(executor.in_flight)
                time.sleep(0.01)
            for future in futures:
                future.result()
    finally:
        executor.close()
    assert max(seen) == 3 and executor.peak_running == 1 and executor.in_flight == 0


def test_engine_errors_reach_the_caller_and_release_everything() -> None:
    with CheckpointExecutor(FakeEngine(0, fail=True), slots=1, lanes=1) as executor:
        with pytest.raises(RuntimeError, match="engine broke"):
            executor.run(pcm(), OPTIONS)
        assert executor.in_flight == 0 and executor.running == 0


def test_submit_returns_a_submission_with_a_future() -> None:
    with CheckpointExecutor(FakeEngine(0.01), slots=4, lanes=2) as executor, executor.admit():
        submissions = [executor.submit(pcm(), OPTIONS) for _ in range(3)]
        assert all(s.future.result(timeout=5).text == "ok" for s in submissions)


def test_closed_executor_takes_no_work() -> None:
    executor = CheckpointExecutor(FakeEngine(0), slots=1, lanes=1)
    executor.close()
    with pytest.raises(ExecutorClosed):
        executor.run(pcm(), OPTIONS)
    with pytest.raises(ExecutorClosed):
        executor.submit(pcm(), OPTIONS)


def test_bad_limits() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CheckpointExecutor(FakeEngine(), slots=0, lanes=1)


class StepEngine:
    """Works in `steps` steps of `step` seconds, checking the token between them (as the real engine does
    between windows and segments); records when calls start and end."""

    def __init__(self, steps: int, step: float = 0.02) -> None:
        self.steps = steps
        self.step = step
        self.started: list[float] = []
        self.ended: list[float] = []

    def transcribe(self, audio: AudioSource, options: TranscriptionOptions, cancel: CancelToken) -> Transcript:
        self.started.append(time.monotonic())
        try:
            for _ in range(self.steps):
                cancel.check()
                time.sleep(self.step)
            return Transcript(text="done", language="en", language_probability=1.0, duration=read_all(audio) / 16000)
        finally:
            self.ended.append(time.monotonic())


def test_the_time_budget_starts_when_a_lane_runs_the_submission() -> None:
    engine = StepEngine(steps=15)  # 0.3 s per call
    with CheckpointExecutor(engine, slots=4, lanes=1) as executor:
        first = executor.submit(pcm(), OPTIONS, timeout=0.6)
        second = executor.submit(pcm(), OPTIONS, timeout=0.6)  # waits ~0.3 s, then runs ~0.3 s: within budget
        assert first.result().text == "done" and second.result().text == "done"
        assert second.started_at is not None and first.started_at is not None
        assert second.started_at - first.started_at >= 0.25


def test_a_timed_out_call_stops_and_frees_its_lane() -> None:
    engine = StepEngine(steps=500)  # 10 s if nothing stops it
    with CheckpointExecutor(engine, slots=2, lanes=1) as executor:
        started = time.monotonic()
        with pytest.raises(SubmissionTimeout):
            executor.submit(pcm(), OPTIONS, timeout=0.2).result()
        assert time.monotonic() - started < 1.0
        deadline = time.monotonic() + 1.0
        while executor.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert executor.running == 0, "the timed-out engine call still holds its lane"
        assert engine.ended[0] - engine.started[0] < 0.5


def test_the_engine_stops_at_its_deadline_even_if_nobody_waits() -> None:
    engine = StepEngine(steps=500)
    with CheckpointExecutor(engine, slots=2, lanes=1) as executor:
        submission = executor.submit(pcm(), OPTIONS, timeout=0.2)
        with pytest.raises(SubmissionTimeout):
            submission.future.result(timeout=2)
        assert engine.ended[0] - engine.started[0] < 0.5


def test_cancelling_a_waiting_submission_means_it_never_runs() -> None:
    engine = StepEngine(steps=10)
    with CheckpointExecutor(engine, slots=4, lanes=1) as executor:
        running = executor.submit(pcm(), OPTIONS)
        waiting = executor.submit(pcm(), OPTIONS)
        waiting.cancel()
        with pytest.raises(SubmissionCancelled):
            waiting.result()
        assert running.result().text == "done"
    assert len(engine.started) == 1


def test_waiting_submissions_do_not_open_their_decoder(audio: AudioFactory) -> None:
    data = audio.silence(5.0).read_bytes()
    gate = threading.Event()

    class GatedEngine:
        def transcribe(self, source: AudioSource, options: TranscriptionOptions, cancel: CancelToken) -> Transcript:
            gate.wait(5)
            return Transcript(text="", language="en", language_probability=1.0, duration=read_all(source) / 16000)

    with CheckpointExecutor(GatedEngine(), slots=4, lanes=1) as executor:
        sources = [EncodedAudio(data, 60) for _ in range(3)]
        submissions = [executor.submit(source, OPTIONS) for source in sources]
        time.sleep(0.1)
        assert not any(source.opened for source in sources), "nothing is decoded before a lane reads it"
        gate.set()
        assert [s.result().duration for s in submissions] == [pytest.approx(5.0)] * 3


# --- draining ----------------------------------------------------------------------------------------


def test_drain_fails_waiting_submissions_at_once_and_refuses_new_ones() -> None:
    engine = StepEngine(steps=10)  # 0.2 s
    with CheckpointExecutor(engine, slots=4, lanes=1) as executor:
        running = executor.submit(pcm(), OPTIONS)
        waiting = [executor.submit(pcm(), OPTIONS) for _ in range(2)]
        while not engine.started:
            time.sleep(0.005)
        started = time.monotonic()
        executor.begin_drain(grace_seconds=5.0)
        for submission in waiting:
            with pytest.raises(ExecutorDraining):
                submission.result()
        assert time.monotonic() - started < 0.1
        with pytest.raises(ExecutorDraining):
            executor.submit(pcm(), OPTIONS)
        assert running.result().text == "done", "a call finishing within the grace period keeps its result"
    assert len(engine.started) == 1


def test_drain_cancels_calls_still_running_after_the_grace_period() -> None:
    engine = StepEngine(steps=500)  # 10 s
    with CheckpointExecutor(engine, slots=2, lanes=1) as executor:
        running = executor.submit(pcm(), OPTIONS, timeout=60)
        while not engine.started:
            time.sleep(0.005)
        started = time.monotonic()
        executor.begin_drain(grace_seconds=0.3)
        with pytest.raises(ExecutorDraining):
            running.result()
        assert 0.25 <= time.monotonic() - started < 1.0
        deadline = time.monotonic() + 1.0
        while executor.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert executor.running == 0 and engine.ended, "the drained call still holds its lane"


# --- call (live sessions' utterance decodes) --------------------------------------------------------


def _blocker() -> tuple[threading.Event, threading.Event, object]:
    """A callable that signals it started and returns once released."""
    started, release = threading.Event(), threading.Event()

    def block() -> str:
        started.set()
        release.wait(5)
        return "blocked"

    return started, release, block


def test_call_runs_on_a_lane_counted_in_running() -> None:
    started, release, block = _blocker()
    with CheckpointExecutor(FakeEngine(0), slots=1, lanes=1) as executor:
        future = executor.call(block)
        assert started.wait(2)
        assert executor.running == 1 and executor.in_flight == 0, "a call needs no slot but holds a lane"
        queued = executor.call(lambda a, b: a + b, 2, 3)
        time.sleep(0.05)
        assert not queued.done(), "the only lane is busy: the call waits its turn"
        release.set()
        assert future.result(2) == "blocked" and queued.result(2) == 5
        assert executor.peak_running == 1 and executor.running == 0


def test_call_shares_the_lanes_with_submissions() -> None:
    started, release, block = _blocker()
    with CheckpointExecutor(FakeEngine(0), slots=2, lanes=1) as executor:
        executor.call(block)
        assert started.wait(2)
        submission = executor.submit(pcm(), OPTIONS)
        time.sleep(0.05)
        assert submission.started_at is None
        release.set()
        assert submission.result().text == "ok"


def test_call_errors_reach_the_future() -> None:
    def broken() -> None:
        raise ValueError("bad decode")

    with CheckpointExecutor(FakeEngine(0), slots=1, lanes=1) as executor:
        with pytest.raises(ValueError, match="bad decode"):
            executor.call(broken).result(2)
        assert executor.running == 0


def test_call_is_refused_while_draining_or_closed_and_waiting_calls_fail() -> None:
    started, release, block = _blocker()
    executor = CheckpointExecutor(FakeEngine(0), slots=1, lanes=1)
    running = executor.call(block)
    assert started.wait(2)
    waiting = executor.call(lambda: "never")
    cancelled = executor.call(lambda: "never either")
    assert cancelled.cancel()
    executor.begin_drain(grace_seconds=5.0)
    with pytest.raises(ExecutorDraining):
        waiting.result(1)
    assert cancelled.cancelled()
    with pytest.raises(ExecutorDraining):
        executor.call(lambda: None)
    release.set()
    assert running.result(2) == "blocked", "a running call finishes during the drain"
    executor.close()
    with pytest.raises(ExecutorClosed):
        executor.call(lambda: None)


def test_close_without_waiting_fails_calls_not_started() -> None:
    started, release, block = _blocker()
    executor = CheckpointExecutor(FakeEngine(0), slots=1, lanes=1)
    executor.call(block)
    assert started.wait(2)
    waiting = executor.call(lambda: "never")
    executor.close(wait=False)
    release.set()
    with pytest.raises(ExecutorClosed):
        waiting.result(2)
