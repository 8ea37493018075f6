"""workers.executor: slot admission and lane concurrency, with a fake engine (pure logic)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from hark.schemas import TranscriptionOptions
from workers.executor import CheckpointExecutor, ExecutorClosed, SlotsExhausted
from workers.transcript import Transcript

OPTIONS = TranscriptionOptions(language="en")
SAMPLES = np.zeros(1600, dtype=np.float32)


class FakeEngine:
    """Sleeps a little per call and records how many calls overlapped."""

    def __init__(self, seconds: float = 0.05, fail: bool = False) -> None:
        self.seconds = seconds
        self.fail = fail
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.calls = 0

    def transcribe(self, samples: np.ndarray, options: TranscriptionOptions) -> Transcript:
        with self.lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.seconds)
            if self.fail:
                raise RuntimeError("engine broke")
            return Transcript(text="ok", language=options.language or "en", language_probability=1.0,
                              duration=len(samples) / 16000)  # fmt: skip
        finally:
            with self.lock:
                self.active -= 1


def test_run_returns_the_transcript_and_frees_the_slot() -> None:
    with CheckpointExecutor(FakeEngine(0), slots=2, lanes=1) as executor:
        transcript = executor.run(SAMPLES, OPTIONS)
        assert transcript.text == "ok" and transcript.duration == pytest.approx(0.1)
        assert executor.in_flight == 0 and executor.running == 0


def test_lanes_bound_concurrent_engine_calls() -> None:
    engine = FakeEngine(0.05)
    with CheckpointExecutor(engine, slots=8, lanes=2) as executor, ThreadPoolExecutor(8) as callers:
        results = list(callers.map(lambda _: executor.run(SAMPLES, OPTIONS), range(8)))
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
            futures = [callers.submit(executor.run, SAMPLES, OPTIONS) for _ in range(3)]
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
            executor.run(SAMPLES, OPTIONS)
        assert executor.in_flight == 0 and executor.running == 0


def test_submit_returns_a_future() -> None:
    with CheckpointExecutor(FakeEngine(0.01), slots=4, lanes=2) as executor, executor.admit():
        futures = [executor.submit(SAMPLES, OPTIONS) for _ in range(3)]
        assert all(f.result(timeout=5).text == "ok" for f in futures)


def test_closed_executor_takes_no_work() -> None:
    executor = CheckpointExecutor(FakeEngine(0), slots=1, lanes=1)
    executor.close()
    with pytest.raises(ExecutorClosed):
        executor.run(SAMPLES, OPTIONS)
    with pytest.raises(ExecutorClosed):
        executor.submit(SAMPLES, OPTIONS)


def test_bad_limits() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CheckpointExecutor(FakeEngine(), slots=0, lanes=1)
