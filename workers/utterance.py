"""One utterance decode of a live session: what is asked, what comes back, and who runs it.

Kept apart from both the engine and the stream transcriber so each imports it without importing the
other (the engine stays free of session logic, the transcriber free of faster-whisper).
"""

from __future__ import annotations

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
