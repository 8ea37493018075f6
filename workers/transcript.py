"""What an engine returns: plain dataclasses, independent of the engine library (as faster-whisper's
own ``Segment``/``TranscriptionInfo``), so executors and tasks never import the engine."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WordOut:
    """One word with its time span (seconds from the start of the audio) and probability (0-1)."""

    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class SegmentOut:
    """One decoded segment (an utterance)."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Transcript:
    """The transcription of one audio clip."""

    text: str
    language: str
    language_probability: float
    duration: float
    segments: list[SegmentOut] = field(default_factory=list)
    words: list[WordOut] = field(default_factory=list)
    """Empty unless word timestamps were asked for."""
