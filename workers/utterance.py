"""One utterance decode of a live session: what is asked, what comes back, and who runs it.

Kept apart from both the engine and the stream transcriber so each imports it without importing the
other (the engine stays free of session logic, the transcriber free of faster-whisper).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from hark.schemas import Keyword

if TYPE_CHECKING:
    from workers.executor import CheckpointExecutor


@dataclass(frozen=True)
class DecodeRequest:
    """Decode `samples` (float32 mono 16 kHz, the utterance so far) as a cheap partial or a final."""

    samples: np.ndarray
    kind: Literal["partial", "final"]
    language: str | None = None
    """Forced language (None: detect)."""
    detect_among: list[str] | None = None
    """When detecting: choose within these languages."""
    prompt: str | None = None
    """Text said before this utterance (Whisper's ``initial_prompt``)."""
    prefix: str | None = None
    """Words the decode must start with (a partial's committed words)."""
    keywords: list[Keyword] = field(default_factory=list)
    word_timestamps: bool = False
    vad_filter: bool = True
    """Run Whisper's own VAD first (off when the session's VAD already gated the audio: ~0.1 s saved)."""


@dataclass(frozen=True)
class DecodeResult:
    """What a decode found; times are seconds from the start of the request's samples."""

    text: str
    language: str
    language_probability: float = 1.0
    words: list[tuple[str, float, float, float]] = field(default_factory=list)
    """``(word, start, end, probability)``; empty unless word timestamps were asked for."""
    segments: list[tuple[str, float, float]] = field(default_factory=list)
    """``(text, start, end)``."""


class UtteranceDecoder(Protocol):
    """Runs decodes off the caller's thread; the future resolves with the result or the error."""

    def submit(self, request: DecodeRequest) -> Future[DecodeResult]: ...


class UtteranceEngine(Protocol):
    def decode_utterance(self, request: DecodeRequest) -> DecodeResult: ...


class LaneDecoder:
    """Decodes on a checkpoint's inference lanes, shared with (and counted like) batch jobs."""

    def __init__(self, executor: CheckpointExecutor, engine: UtteranceEngine | None = None) -> None:
        self.executor = executor
        self.engine: UtteranceEngine = engine if engine is not None else executor.engine  # type: ignore[assignment]

    def submit(self, request: DecodeRequest) -> Future[DecodeResult]:
        """Queue the decode; raises ExecutorDraining / ExecutorClosed when the executor takes no work."""
        return self.executor.call(self.engine.decode_utterance, request)


class BatchingEngine(UtteranceEngine, Protocol):
    def can_batch(self, request: DecodeRequest) -> bool: ...

    def decode_many(self, requests: list[DecodeRequest]) -> list[DecodeResult]: ...


class BatchingDecoder:
    """Every live session of a checkpoint decoding on its lanes: finals first, partials batched together.

    Whisper's cost per decode is a full 30 s window whatever the utterance's length, so many sessions'
    decodes are cheapest as one batched call (:meth:`~workers.engine.WhisperEngine.decode_many`).
    A session has at most one decode in flight, so the queue holds at most one request per session.

    A lane job takes the waiting finals first: one alone when it needs what a batch cannot give (word
    timestamps, beam search, language detection), else the batchable finals, topped up with partials
    to `max_batch` (``HARK_STREAM_MAX_BATCH``: 8 on a GPU, 1 on a CPU, where a batch saves nothing).
    With a batch of 1 the decoder still schedules: finals before partials, one job per lane at most. At most `max_jobs`
    (default: the lanes) jobs are queued or running at a time, and a job that leaves work behind queues
    the next one at the back of the lanes' queue, so batch requests keep their turn on the lanes.
    """

    def __init__(self, executor: CheckpointExecutor, engine: BatchingEngine | None = None, *, max_batch: int = 1,
                 max_jobs: int | None = None) -> None:  # fmt: skip
        self.executor = executor
        self.engine: BatchingEngine = engine if engine is not None else executor.engine  # type: ignore[assignment]
        self.max_batch = max_batch
        self.max_jobs = max_jobs or executor.lanes
        self._lock = threading.Lock()
        self._finals: deque[tuple[DecodeRequest, Future[DecodeResult]]] = deque()
        self._partials: deque[tuple[DecodeRequest, Future[DecodeResult]]] = deque()
        self._jobs = 0
        self.batches = 0
        """Lane jobs run so far (for tests and logs)."""
        self.largest_batch = 0

    def submit(self, request: DecodeRequest) -> Future[DecodeResult]:
        """Queue the decode; raises ExecutorDraining / ExecutorClosed when the executor takes no work."""
        future: Future[DecodeResult] = Future()
        entry = (request, future)
        with self._lock:
            (self._finals if request.kind == "final" else self._partials).append(entry)
            start = self._jobs < self.max_jobs
            if start:
                self._jobs += 1
        if start:
            try:
                self.executor.call(self._run)
            except Exception:
                with self._lock:
                    self._jobs -= 1
                    queue = self._finals if request.kind == "final" else self._partials
                    if entry in queue:
                        queue.remove(entry)
                raise
        return future

    def _take(self) -> list[tuple[DecodeRequest, Future[DecodeResult]]]:
        """The next unit of work (called with the lock held); futures already cancelled are dropped."""
        taken: list[tuple[DecodeRequest, Future[DecodeResult]]] = []
        while self._finals and len(taken) < self.max_batch:
            request, future = self._finals[0]
            alone = not self.engine.can_batch(request)
            if alone and taken:
                return taken  # it goes next, by itself
            self._finals.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            taken.append((request, future))
            if alone:
                return taken
        while self._partials and len(taken) < self.max_batch:
            request, future = self._partials.popleft()
            if future.set_running_or_notify_cancel():
                taken.append((request, future))
        return taken

    def _run(self) -> None:
        with self._lock:
            work = self._take()
        try:
            if work:
                self._decode(work)
        finally:
            with self._lock:
                more = bool(self._finals or self._partials)
                if not more:
                    self._jobs -= 1
            if more:
                self._requeue()

    def _decode(self, work: list[tuple[DecodeRequest, Future[DecodeResult]]]) -> None:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(work))
        try:
            if len(work) == 1:
                results = [self.engine.decode_utterance(work[0][0])]
            else:
                results = self.engine.decode_many([request for request, _future in work])
        except BaseException as error:
            for _request, future in work:
                future.set_exception(error)
            return
        for (_request, future), result in zip(work, results, strict=True):
            future.set_result(result)

    def _requeue(self) -> None:
        try:
            self.executor.call(self._run)
        except Exception as error:  # draining or closed: nobody will run what is left
            with self._lock:
                self._jobs -= 1
                left = [*self._finals, *self._partials]
                self._finals.clear()
                self._partials.clear()
            for _request, future in left:
                if future.set_running_or_notify_cancel():
                    future.set_exception(error)
