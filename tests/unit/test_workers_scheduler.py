"""The scheduler: FIFO order from admission to lane, bounded batch collection, grouping by options,
members leaving a batch on their own (timeout, cancel, drain), batch sizing; batched results equal
solo ones on the real tiny.en checkpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from checkpoints.manifest import load_manifest
from hark.schemas import Keyword, TranscriptionOptions
from tests.audio import ENGLISH_SENTENCES, AudioFactory
from tests.conftest import Checkpoints
from tests.e2e.helpers import wer
from workers.audio import AudioSource, EncodedAudio, PcmAudio
from workers.device import DEFAULT_ITEM_BYTES, DevicePlan, batch_size
from workers.engine import WhisperEngine
from workers.executor import (
    BatchDone,
    BatchRequest,
    CancelToken,
    CheckpointExecutor,
    ExecutorClosed,
    ExecutorDraining,
    Requeue,
    SubmissionCancelled,
    SubmissionTimeout,
)
from workers.scheduler import RunQueue, options_key
from workers.transcript import Transcript

EN = TranscriptionOptions(language="en")
DE = TranscriptionOptions(language="de")


def pcm() -> PcmAudio:
    return PcmAudio(np.zeros(1600, dtype=np.float32))


# --- the run queue (pure) ---------------------------------------------------------------------------


def test_entries_run_first_come_first_served_and_unkeyed_ones_alone() -> None:
    queue: RunQueue[str] = RunQueue(max_batch=4, wait_seconds=0)
    for item, key in [("a1", "A"), ("call", None), ("b1", "B"), ("a2", "A"), ("a3", "A")]:
        queue.put(item, key)
    assert queue.take() == ["a1", "a2", "a3"], "the head takes its later same-key companions along"
    assert queue.take() == ["call"] and queue.take() == ["b1"]
    queue.close()
    assert queue.take() is None


def test_batches_are_capped_and_a_batch_of_one_never_waits() -> None:
    queue: RunQueue[int] = RunQueue(max_batch=2, wait_seconds=5)
    for item in range(5):
        queue.put(item, "k")
    assert [queue.take(), queue.take()] == [[0, 1], [2, 3]]
    single: RunQueue[int] = RunQueue(max_batch=1, wait_seconds=5)
    single.put(7, "k")
    single.put(8, "k")
    started = time.monotonic()
    assert single.take() == [7] and single.take() == [8]
    assert time.monotonic() - started < 0.5


def test_the_wait_for_companions_is_bounded_and_collects_late_arrivals() -> None:
    queue: RunQueue[str] = RunQueue(max_batch=3, wait_seconds=0.15)
    queue.put("alone", "k")
    started = time.monotonic()
    assert queue.take() == ["alone"]
    assert 0.12 <= time.monotonic() - started < 1.0, "waits at most the bound"
    queue.put("first", "k")
    threading.Timer(0.03, lambda: queue.put("late", "k")).start()
    threading.Timer(0.04, lambda: queue.put("other", "x")).start()
    assert queue.take() == ["first", "late"]
    assert queue.take() == ["other"]


def test_shared_batches_are_balanced_between_lanes() -> None:
    queue: RunQueue[int] = RunQueue(max_batch=8, wait_seconds=5, share=2)
    queue.put(0, "k")
    started = time.monotonic()
    assert queue.take() == [0] and time.monotonic() - started < 0.5, "a lone request never waits"
    for item in range(1, 9):
        queue.put(item, "k")
    # This lane still runs [0]'s batch in the eyes of the queue until it takes again: nothing else runs.
    taken: dict[str, list[int] | None] = {}
    barrier = threading.Barrier(2)

    def lane(name: str) -> None:
        barrier.wait()
        taken[name] = queue.take()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lane, ["a", "b"]))
    batches = sorted(len(batch or []) for batch in taken.values())
    assert sum(batches) == 8 and batches[-1] <= 5, f"two lanes split the waiting work: {taken}"
    # With nothing running, a lane takes its share of the waiting work and leaves the rest to the other.
    busy: RunQueue[int] = RunQueue(max_batch=8, wait_seconds=0.1, share=2)
    for item in range(8):
        busy.put(item, "k")
    other = ThreadPoolExecutor(1)  # the other lane, always the same thread
    assert other.submit(busy.take).result() == [0, 1, 2, 3]
    assert busy.take() == [4, 5, 6, 7], "4 waiting + 4 running: its share is the rest"
    # A lane taking next to a busy one collects as many as that one runs (4 waiting + 4 running -> 4),
    # and runs as soon as it has them instead of waiting out the bound.
    taking = other.submit(busy.take)
    busy.put(10, "k")
    threading.Timer(0.02, lambda: [busy.put(item, "k") for item in (11, 12, 13)]).start()
    started = time.monotonic()
    assert taking.result() == [10, 11, 12, 13]
    assert time.monotonic() - started < 0.09
    other.shutdown()


def test_entries_put_back_return_to_their_place_by_arrival() -> None:
    now = [0.0]
    queue: RunQueue[str] = RunQueue(max_batch=4, wait_seconds=0, clock=lambda: now[0])
    for name in ("c", "d"):
        now[0] += 1
        queue.put(name, "k")  # arrived at 1 and 2
    queue.put("b", None, arrived=0.5)  # handed back, one after the other, in arrival order
    queue.put("a", None, arrived=0.2)
    queue.put("c2", None, arrived=1.5)
    assert [queue.take() for _ in range(4)] == [["a"], ["b"], ["c", "d"], ["c2"]]


def test_remove_and_options_key() -> None:
    queue: RunQueue[int] = RunQueue()
    for item in range(4):
        queue.put(item)
    assert queue.remove(lambda item: item % 2 == 1) == [1, 3] and len(queue) == 2
    keyed = TranscriptionOptions(language="en", keywords=[Keyword(word="Hark", boost=2)])
    assert options_key(EN) == options_key(TranscriptionOptions(language="en"))
    assert len({options_key(o) for o in (EN, DE, keyed, EN.model_copy(update={"word_timestamps": True}))}) == 4


def test_batch_sizing() -> None:
    gib = 1024**3
    assert batch_size("cpu", 0, free_bytes=64 * gib, item_bytes=1) == 1, "CPU: batches were measured not to pay"
    assert batch_size("cpu", 4) == 4 and batch_size("cuda", 3, free_bytes=gib) == 3, "HARK_MAX_BATCH wins"
    assert batch_size("cuda", 0, free_bytes=8 * gib, item_bytes=512 * 1024**2) == 8  # half of free / per item
    assert batch_size("cuda", 0, free_bytes=8 * gib) == min(16, 4 * gib // DEFAULT_ITEM_BYTES)
    assert batch_size("cuda", 0, free_bytes=100 * 1024**2, item_bytes=gib) == 1
    assert batch_size("cuda", 0, free_bytes=None) == 1


# --- the executor with a batch engine (fake: records batches, works in token-checked steps) ------------


class BatchRecorder:
    """Runs members one step at a time, checking each token; records solo calls and batches."""

    def __init__(self, steps: int = 3, step: float = 0.02) -> None:
        self.steps = steps
        self.step = step
        self.order: list[str] = []
        self.batches: list[list[str]] = []

    def _one(self, options: TranscriptionOptions, cancel: CancelToken) -> Transcript:
        for _ in range(self.steps):
            cancel.check()
            time.sleep(self.step)
        return Transcript(text="ok", language=options.language or "en", language_probability=1.0, duration=0.1)

    def transcribe(self, audio: AudioSource, options: TranscriptionOptions, cancel: CancelToken) -> Transcript:
        self.order.append(options.language or "")
        return self._one(options, cancel)

    def transcribe_many(self, requests: Sequence[BatchRequest], done: BatchDone) -> None:
        self.batches.append([options.language or "" for _audio, options, _token in requests])
        self.order.extend(options.language or "" for _audio, options, _token in requests)

        def run(index: int) -> None:
            _audio, options, token = requests[index]
            try:
                done(index, self._one(options, token), None)
            except BaseException as error:
                done(index, None, error)

        with ThreadPoolExecutor(len(requests)) as pool:
            list(pool.map(run, range(len(requests))))


def _hold_lane(executor: CheckpointExecutor) -> threading.Event:
    release, started = threading.Event(), threading.Event()
    executor.call(lambda: (started.set(), release.wait(5)))
    assert started.wait(2)
    return release


def test_fifo_across_submissions_and_calls() -> None:
    engine = BatchRecorder(steps=1, step=0)
    with CheckpointExecutor(engine, slots=8, lanes=1) as executor:  # max_batch 1: every entry alone
        release = _hold_lane(executor)
        first = executor.submit(pcm(), TranscriptionOptions(language="a"))
        call = executor.call(lambda: engine.order.append("call"))
        second = executor.submit(pcm(), TranscriptionOptions(language="b"))
        release.set()
        first.result(), call.result(2), second.result()
    assert engine.order == ["a", "call", "b"] and engine.batches == []


def test_waiting_submissions_of_the_same_options_run_as_one_batch() -> None:
    engine = BatchRecorder()
    with CheckpointExecutor(engine, slots=8, lanes=1, max_batch=3, batch_wait=0.01) as executor:
        release = _hold_lane(executor)
        submissions = [executor.submit(pcm(), options) for options in (EN, DE, EN, EN, EN)]
        release.set()
        assert all(s.result().text == "ok" for s in submissions)
        assert executor.running == 0 and executor.peak_running == 3
    assert engine.batches[0] == ["en", "en", "en"], engine.batches
    assert engine.order[3:] == ["de", "en"], "the German request ran next, then the last English one"


class HandingBack(BatchRecorder):
    """A batch engine that answers the first member of a batch and hands the others back to the run
    queue (the last one to run alone), as the packer does with what it will not decode now."""

    def transcribe_many(self, requests: Sequence[BatchRequest], done: BatchDone) -> None:
        self.batches.append([options.language or "" for _audio, options, _token in requests])
        done(0, self._one(requests[0][1], requests[0][2]), None)
        for index in range(1, len(requests)):
            done(index, None, Requeue(requests[index][0], alone=index == len(requests) - 1))


def test_a_batch_member_handed_back_runs_again_with_its_budget() -> None:
    engine = HandingBack(steps=2, step=0.01)
    with CheckpointExecutor(engine, slots=8, lanes=1, max_batch=3, batch_wait=0.01) as executor:
        release = _hold_lane(executor)
        submissions = [executor.submit(pcm(), EN, timeout=5) for _ in range(3)]
        later = executor.submit(pcm(), DE)
        release.set()
        assert [s.result().text for s in submissions] == ["ok", "ok", "ok"]
        later.result()
        assert executor.running == 0 and executor.in_flight == 0
        started = [s.started_at for s in submissions]
    # [en en en] -> first answered, second back (batchable), third back alone, in front of the German one.
    assert engine.batches == [["en", "en", "en"]] and engine.order == ["en", "en", "de"], engine.order
    assert all(when is not None for when in started)


def test_a_handed_back_member_is_answered_when_the_executor_closes() -> None:
    handed = threading.Event()

    class HandBackThenWork(BatchRecorder):
        def transcribe_many(self, requests: Sequence[BatchRequest], done: BatchDone) -> None:
            done(1, None, Requeue(requests[1][0], alone=True))
            handed.set()
            done(0, self._one(requests[0][1], requests[0][2]), None)

    executor = CheckpointExecutor(HandBackThenWork(steps=10, step=0.03), slots=8, lanes=1, max_batch=2,
                                  batch_wait=0.01)  # fmt: skip
    release = _hold_lane(executor)
    first, second = executor.submit(pcm(), EN), executor.submit(pcm(), EN)
    release.set()
    assert handed.wait(2)
    executor.close(wait=False)  # the member waits in the queue again: closing must answer it
    with pytest.raises(ExecutorClosed):
        second.result()
    assert first.result().text == "ok"


def test_a_timed_out_or_cancelled_member_leaves_its_batch() -> None:
    engine = BatchRecorder(steps=10, step=0.03)  # 0.3 s per member
    with CheckpointExecutor(engine, slots=8, lanes=1, max_batch=4, batch_wait=0.01) as executor:
        release = _hold_lane(executor)
        slow = executor.submit(pcm(), EN, timeout=0.1)
        cancelled = executor.submit(pcm(), EN)
        fine = [executor.submit(pcm(), EN, timeout=5) for _ in range(2)]
        cancelled.cancel()
        release.set()
        started = time.monotonic()
        with pytest.raises(SubmissionTimeout):
            slow.result()
        assert time.monotonic() - started < 0.25, "the timed-out member answers at its own deadline"
        with pytest.raises(SubmissionCancelled):
            cancelled.result()
        assert [s.result().text for s in fine] == ["ok", "ok"], "the other members are not broken"
    assert engine.batches == [["en", "en", "en"]], "the cancelled one never ran"


def test_drain_fails_waiting_batches_and_running_members_after_the_grace() -> None:
    engine = BatchRecorder(steps=100, step=0.02)  # 2 s per member
    with CheckpointExecutor(engine, slots=8, lanes=1, max_batch=2, batch_wait=0.01) as executor:
        running = [executor.submit(pcm(), EN) for _ in range(2)]
        while not engine.batches:
            time.sleep(0.005)
        waiting = executor.submit(pcm(), EN)
        executor.begin_drain(grace_seconds=0.1)
        with pytest.raises(ExecutorDraining):
            waiting.result()
        for submission in running:
            with pytest.raises(ExecutorDraining):
                submission.result()
        deadline = time.monotonic() + 1
        while executor.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert executor.running == 0
    assert engine.batches == [["en", "en"]]


# --- real model: a batch gives the solo results ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_beam5(bundled_checkpoints: Checkpoints) -> Iterator[WhisperEngine]:
    path = bundled_checkpoints.tiny_en
    manifest = load_manifest(path)
    yield WhisperEngine(path, DevicePlan("cpu", "int8", 1, 2), languages=manifest.languages,
                        multilingual=manifest.multilingual, beam_size=5)  # fmt: skip


def test_batched_transcripts_equal_solo_ones(tiny_beam5: WhisperEngine, audio: AudioFactory) -> None:
    engine = tiny_beam5
    clips = [audio.english(index).read_bytes() for index in range(3)]
    options = TranscriptionOptions(language="en", word_timestamps=True)
    solo = [engine.transcribe(EncodedAudio(clip, 60), options) for clip in clips]
    with CheckpointExecutor(engine, slots=8, lanes=1, max_batch=3, batch_wait=0.05) as executor:
        release = _hold_lane(executor)
        submissions = [executor.submit(EncodedAudio(clip, 60), options, timeout=60) for clip in clips]
        release.set()
        batched = [submission.result() for submission in submissions]
    assert executor.peak_running == 3, "the three ran as one batch"
    assert engine.last_encoder_batches == [3], "their windows went through one encoder call"
    for index, (alone, together) in enumerate(zip(solo, batched, strict=True)):
        assert wer(ENGLISH_SENTENCES[index], together.text) <= wer(ENGLISH_SENTENCES[index], alone.text) + 0.005
        assert together.text == alone.text and together.words == alone.words and together.segments == alone.segments


def test_a_real_batch_member_past_its_budget_fails_alone(tiny_beam5: WhisperEngine, audio: AudioFactory) -> None:
    clips = [audio.english(index).read_bytes() for index in (3, 4)]
    with CheckpointExecutor(tiny_beam5, slots=4, lanes=1, max_batch=2, batch_wait=0.05) as executor:
        release = _hold_lane(executor)
        doomed = executor.submit(EncodedAudio(clips[0], 60), EN, timeout=0.01)
        kept = executor.submit(EncodedAudio(clips[1], 60), EN, timeout=60)
        release.set()
        with pytest.raises(SubmissionTimeout):
            doomed.result()
        assert wer(ENGLISH_SENTENCES[4], kept.result().text) <= 0.2
        assert executor.peak_running == 2
        deadline = time.monotonic() + 5
        while executor.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert executor.running == 0, "the timed-out member stopped and freed its place"


def test_the_model_child_sizes_its_batches_from_the_settings() -> None:
    from hark.settings import load_settings
    from workers.child import _max_batch

    class Measured:
        def measure_item_bytes(self) -> int:
            return 256 * 1024**2

    cpu, cuda = DevicePlan("cpu", "int8", 2, 1), DevicePlan("cuda", "float16", 1, 1)
    engine = Measured()
    assert _max_batch(load_settings(HARK_SCHEDULER="lanes", HARK_MAX_BATCH=8), cpu, engine) == 1  # type: ignore[arg-type]
    assert _max_batch(load_settings(HARK_MAX_BATCH=3), cpu, engine) == 3  # type: ignore[arg-type]
    assert _max_batch(load_settings(), cpu, engine) == 1  # type: ignore[arg-type]
    assert _max_batch(load_settings(HARK_PACKING="on"), cpu, engine) == 8, "packing needs batches to pack"  # type: ignore[arg-type]
    # CUDA without a visible GPU (this machine): no free-memory figure, so the safe batch of one.
    assert _max_batch(load_settings(), cuda, engine) == 1  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        load_settings(HARK_SCHEDULER="fastest")


def test_a_request_running_alone_goes_to_the_engines_solo_path() -> None:
    class SoloAware(BatchRecorder):
        def transcribe_alone(self, audio: AudioSource, options: TranscriptionOptions,
                             cancel: CancelToken) -> Transcript:  # fmt: skip
            self.order.append("alone")
            return self._one(options, cancel)

    engine = SoloAware(steps=1, step=0)
    with CheckpointExecutor(engine, slots=4, lanes=2) as executor:
        executor.run(pcm(), EN)
        release = _hold_lane(executor)  # a live decode runs: the next request shares the cores
        executor.run(pcm(), EN)
        release.set()
    assert engine.order == ["alone", "en"]


def test_with_packing_a_batch_of_short_clips_shares_one_window(tiny_beam5: WhisperEngine, audio: AudioFactory) -> None:
    from workers.pack_stage import PackStage
    from workers.packing import WindowPacker

    stage = PackStage(WindowPacker(tiny_beam5, max_seconds=10))
    tiny_beam5.pack_stage = stage
    try:
        clips = [audio.english(index).read_bytes() for index in range(3)]
        with CheckpointExecutor(tiny_beam5, slots=4, lanes=1, max_batch=3, batch_wait=0.05) as executor:
            release = _hold_lane(executor)
            submissions = [executor.submit(EncodedAudio(clip, 60), EN, timeout=60) for clip in clips]
            release.set()
            texts = [submission.result().text for submission in submissions]
    finally:
        tiny_beam5.pack_stage = None
    assert stage.packed == 3, "the three short clips were answered from one packed window"
    for index, text in enumerate(texts):
        assert wer(ENGLISH_SENTENCES[index], text) <= 0.25, text


def test_with_packing_a_batch_of_long_requests_keeps_their_first_seconds(tiny_beam5: WhisperEngine,
                                                                         audio: AudioFactory) -> None:  # fmt: skip
    """Every member longer than the packer reads (30 s): the stage returns them all, as replays of what it
    read; the batch must run those, not the original sources (already 30 s in: a regression lost them)."""
    from workers.pack_stage import PackStage
    from workers.packing import WindowPacker

    long_clip = audio.long_english(34).read_bytes()
    solo = tiny_beam5.transcribe(EncodedAudio(long_clip, 120), EN, CancelToken()).text
    tiny_beam5.pack_stage = PackStage(WindowPacker(tiny_beam5, max_seconds=10))
    try:
        with CheckpointExecutor(tiny_beam5, slots=4, lanes=1, max_batch=2, batch_wait=0.05) as executor:
            release = _hold_lane(executor)
            submissions = [executor.submit(EncodedAudio(long_clip, 120), EN, timeout=120) for _ in range(2)]
            release.set()
            texts = [submission.result().text for submission in submissions]
    finally:
        tiny_beam5.pack_stage = None
    assert texts == [solo, solo]
