"""Live sessions' decodes shared on the lanes: finals first, partials batched into one engine call."""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.helpers import wer
from workers.executor import CheckpointExecutor, ExecutorDraining
from workers.utterance import BatchingDecoder, DecodeRequest, DecodeResult


class RecordingEngine:
    """Counts calls; each takes `delay` seconds (the lane is busy meanwhile)."""

    def __init__(self, delay: float = 0.15) -> None:
        self.delay = delay
        self.calls: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    def decode_utterance(self, request: DecodeRequest) -> DecodeResult:
        with self.lock:
            self.calls.append(("solo", [request.prompt or ""]))
        time.sleep(self.delay)
        return DecodeResult(text=f"{request.kind}:{request.prompt}", language="en")

    def can_batch(self, request: DecodeRequest) -> bool:
        return request.kind == "partial" or not request.word_timestamps

    def decode_many(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        with self.lock:
            self.calls.append(("batch", [r.prompt or "" for r in requests]))
        time.sleep(self.delay)
        return [DecodeResult(text=f"batched:{r.prompt}", language="en") for r in requests]


def _request(name: str, kind: str = "partial", words: bool = False) -> DecodeRequest:
    return DecodeRequest(samples=np.zeros(16000, dtype=np.float32), kind=kind, language="en", prompt=name,  # type: ignore[arg-type]
                         word_timestamps=words)  # fmt: skip


def test_finals_go_first_and_waiting_partials_share_one_call() -> None:
    engine = RecordingEngine()
    with CheckpointExecutor(engine, slots=8, lanes=1) as executor:  # type: ignore[arg-type]
        decoder = BatchingDecoder(executor, engine, max_batch=8)
        first = decoder.submit(_request("p0"))
        time.sleep(0.05)  # p0 runs; the rest queue behind it
        waiting = [decoder.submit(_request(f"p{i}")) for i in (1, 2, 3)]
        final = decoder.submit(_request("f1", "final", words=True))
        results = [f.result(timeout=5) for f in (first, *waiting, final)]
    assert engine.calls == [("solo", ["p0"]), ("solo", ["f1"]), ("batch", ["p1", "p2", "p3"])]
    assert [r.text for r in results] == ["partial:p0", "batched:p1", "batched:p2", "batched:p3", "final:f1"]
    assert decoder.largest_batch == 3


def test_finals_without_words_are_batched_ahead_of_partials() -> None:
    engine = RecordingEngine()
    with CheckpointExecutor(engine, slots=8, lanes=1) as executor:  # type: ignore[arg-type]
        decoder = BatchingDecoder(executor, engine, max_batch=3)
        busy = decoder.submit(_request("busy"))
        time.sleep(0.05)
        partials = [decoder.submit(_request(f"p{i}")) for i in (1, 2)]
        finals = [decoder.submit(_request("f1", "final")), decoder.submit(_request("f2", "final")),
                  decoder.submit(_request("w3", "final", words=True)), decoder.submit(_request("f4", "final"))]
        for future in (busy, *partials, *finals):
            future.result(timeout=5)
    # Batchable finals first (up to the cap), a final needing words alone, then the rest.
    assert engine.calls == [("solo", ["busy"]), ("batch", ["f1", "f2"]), ("solo", ["w3"]),
                            ("batch", ["f4", "p1", "p2"])]  # fmt: skip


def test_cancelled_partials_are_skipped_and_batches_are_capped() -> None:
    engine = RecordingEngine()
    with CheckpointExecutor(engine, slots=8, lanes=1) as executor:  # type: ignore[arg-type]
        decoder = BatchingDecoder(executor, engine, max_batch=2)
        busy = decoder.submit(_request("busy"))
        time.sleep(0.05)
        futures = [decoder.submit(_request(f"q{i}")) for i in range(5)]
        assert futures[1].cancel()
        for future in (busy, *futures[:1], *futures[2:]):
            future.result(timeout=5)
    batches = [names for kind, names in engine.calls if kind == "batch"]
    assert all(len(names) <= 2 for names in batches)
    assert "q1" not in [name for _kind, names in engine.calls for name in names]


def test_batch_size_by_device() -> None:
    from hark.settings import load_settings

    assert load_settings(stream_max_batch=0).stream_batch_for("cpu") == 1
    assert load_settings(stream_max_batch=0).stream_batch_for("cuda") == 8
    assert load_settings(stream_max_batch=3).stream_batch_for("cpu") == 3


def test_jobs_never_exceed_the_lanes() -> None:
    engine = RecordingEngine(delay=0.05)
    with CheckpointExecutor(engine, slots=64, lanes=2) as executor:  # type: ignore[arg-type]
        decoder = BatchingDecoder(executor, engine)
        futures: list[Future[DecodeResult]] = []
        for index in range(30):
            futures.append(decoder.submit(_request(f"r{index}", "final" if index % 7 == 0 else "partial")))
            time.sleep(0.005)
            assert executor.running <= 2
        assert all(f.result(timeout=10).text for f in futures)
        assert decoder._jobs == 0


def test_a_draining_executor_fails_what_waits() -> None:
    engine = RecordingEngine(delay=0.3)
    executor = CheckpointExecutor(engine, slots=8, lanes=1)  # type: ignore[arg-type]
    decoder = BatchingDecoder(executor, engine)
    running = decoder.submit(_request("running"))
    time.sleep(0.05)
    queued = decoder.submit(_request("queued"))
    executor.begin_drain(grace_seconds=5)
    assert running.result(timeout=5).text == "partial:running"
    with pytest.raises(ExecutorDraining):
        queued.result(timeout=5)
    with pytest.raises(ExecutorDraining):
        decoder.submit(_request("late"))
    executor.close()


# --- the engine's batched partials on the real model --------------------------------------------

SENTENCES = ("please call me back tomorrow morning", "open the window and let the fresh air in",
             "the meeting has been moved to next monday")  # fmt: skip


def _speech(text: str) -> np.ndarray:
    raw = subprocess.run(f'espeak-ng -v en-us -s 150 --stdout "{text}" | sox - -r 16000 -c 1 -e floating-point '
                         "-b 32 -t raw -", shell=True, capture_output=True, check=True).stdout  # fmt: skip
    return np.frombuffer(raw, dtype=np.float32).copy()


@pytest.fixture(scope="module")
def tiny_engine() -> object:
    from checkpoints.bundled import build_bundled
    from hark.settings import load_settings
    from workers.device import DevicePlan
    from workers.engine import WhisperEngine

    built = build_bundled(load_settings().model_cache_dir, progress=False)
    path = Path(next(c.path for c in built if c.manifest.name == "whisper-tiny-en"))
    return WhisperEngine(path, DevicePlan(device="cpu", compute_type="int8", lanes=1, cpu_threads=2),
                         languages=["en"], multilingual=False)  # fmt: skip


def test_batched_partials_read_like_solo_ones(tiny_engine: object) -> None:
    clips = [_speech(text) for text in SENTENCES]
    requests = [DecodeRequest(samples=clip, kind="partial", language="en", vad_filter=False) for clip in clips]
    requests[1] = DecodeRequest(samples=clips[1], kind="final", language="en")  # a final without words batches too
    assert tiny_engine.can_batch(requests[1])  # type: ignore[attr-defined]
    assert not tiny_engine.can_batch(DecodeRequest(samples=clips[1], kind="final", language="en",  # type: ignore[attr-defined]
                                                   word_timestamps=True))  # fmt: skip
    requests[2] = DecodeRequest(samples=clips[2], kind="partial", language="en", prefix="The meeting",
                                vad_filter=False)  # fmt: skip
    batched = tiny_engine.decode_many(requests)  # type: ignore[attr-defined]
    solo = [tiny_engine.decode_utterance(r) for r in requests]  # type: ignore[attr-defined]
    for text, one, many in zip(SENTENCES, solo, batched, strict=True):
        assert wer(text, many.text) <= wer(text, one.text) + 0.15, (many.text, one.text)
        assert many.language == "en"
    assert batched[2].text.lower().startswith("the meeting")
    noise = np.random.default_rng(3).normal(0, 0.05, 16000 * 2).astype(np.float32)
    quiet = tiny_engine.decode_many([DecodeRequest(samples=noise, kind="partial", language="en"),  # type: ignore[attr-defined]
                                         DecodeRequest(samples=np.zeros(16000, np.float32), kind="partial",
                                                       language="en")])  # fmt: skip
    assert [r.text for r in quiet] == ["", ""], "noise and silence must not invent text in a batch either"
