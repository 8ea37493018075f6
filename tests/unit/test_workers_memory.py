"""Peak memory of one long request through the real task path (fakeredis, real tiny.en engine).

Before the windowed engine a worker decoded the whole upload to float32 before waiting for a lane
(14,000 s of silence: ~900 MB, twice that while joining the pieces) and faster-whisper then ran VAD and
computed features over all of it. Now the lane pulls two-minute windows, so the growth is a few windows
whatever the duration. ``bench/memory.py`` measures a real worker on a 4-hour file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import fakeredis
import psutil
import pytest

from checkpoints.manifest import load_manifest
from hark.schemas import CheckpointInfo, TranscribeTask, TranscriptionOptions
from hark.settings import load_settings
from tests.audio import AudioFactory
from tests.conftest import Checkpoints
from workers import tasks
from workers.context import WorkerContext, make_store
from workers.device import DevicePlan
from workers.engine import WhisperEngine
from workers.executor import CheckpointExecutor

SHORT_MINUTES = 4
LONG_MINUTES = 40
#: Ten times the audio may not cost more than this on top of the short request's peak.
SLACK_BYTES = 32 * 1024 * 1024
#: 40 min of float32 alone is 154 MB; the old path peaked at over twice that. The new one holds a
#: two-minute window (7.7 MB) and Silero VAD's working memory over it (~90 MB, freed after each call).
MAX_GROWTH_BYTES = 150 * 1024 * 1024


class PeakRss:
    """Samples this process's resident set every few milliseconds in a thread."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


@pytest.fixture(scope="module")
def context(bundled_checkpoints: Checkpoints) -> Iterator[WorkerContext]:
    path = bundled_checkpoints.tiny_en
    manifest = load_manifest(path)
    engine = WhisperEngine(path, DevicePlan(device="cpu", compute_type="int8", lanes=1, cpu_threads=2),
                           languages=manifest.languages, multilingual=False, label=manifest.label)  # fmt: skip
    engine.warm_up()
    settings = load_settings(deployment="dep", max_audio_seconds=4 * 3600)
    client = fakeredis.FakeRedis()
    executor = CheckpointExecutor(engine, slots=2, lanes=1)
    info = CheckpointInfo(name=manifest.name, version=manifest.version, languages=manifest.languages,
                          multilingual=False)  # fmt: skip
    yield WorkerContext(settings=settings, redis=client, store=make_store(settings, client), worker_id="host-1",
                        checkpoint=info, executor=executor)  # fmt: skip
    executor.close()


def _run(context: WorkerContext, audio: AudioFactory, minutes: float) -> int:
    """Transcribe `minutes` of silence (FLAC) through the task; the peak RSS growth in bytes."""
    rid = f"req_{minutes:g}min"
    data = audio.convert(audio.silence(minutes * 60.0), suffix="flac").read_bytes()  # small: silence compresses
    key = context.store.stage_audio(rid, data)
    context.store.create(rid, checkpoint="whisper-tiny-en")
    task = TranscribeTask(request_id=rid, deployment="dep", checkpoint="whisper-tiny-en", audio_key=key,
                          file_size=len(data), options=TranscriptionOptions(language="en"),
                          submitted_at=time.time())  # fmt: skip
    del data
    with PeakRss() as rss:
        outcome = tasks.handle_transcription(context, task)
    state = context.store.get(rid) or {}
    assert outcome == "success", state
    assert state["result"]["transcription"] == ""
    assert state["result"]["metadata"]["duration"] == pytest.approx(minutes * 60.0)
    print(f"{minutes:g} min of audio: peak growth {rss.growth / 2**20:.0f} MB")
    return rss.growth


@pytest.mark.timeout(240)
def test_peak_memory_does_not_grow_with_the_duration(context: WorkerContext, audio: AudioFactory) -> None:
    short = _run(context, audio, SHORT_MINUTES)  # also brings the allocator to its steady state
    long = _run(context, audio, LONG_MINUTES)
    grew = f"{LONG_MINUTES} min grew {long / 2**20:.0f} MB, {SHORT_MINUTES} min {short / 2**20:.0f} MB"
    assert long < short + SLACK_BYTES, grew
    assert long < MAX_GROWTH_BYTES, f"peak grew by {long / 2**20:.0f} MB"
