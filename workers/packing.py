"""Window packing: several short requests' speech laid into one 30 s Whisper window and decoded once.

Whisper encodes a full 30 s window per call whatever the audio's length, so a 4 s request wastes most
of its encoder pass (and its decoder's attention over the padding). Packing trims each request to its
speech (Silero VAD, the same chunks the solo path's ``vad_filter`` keeps), lays several requests into
one window separated by silence, decodes the window once with word timestamps and hands every word
back to the request whose span holds its midpoint, on that request's own timeline.

The scheduler calls :meth:`WindowPacker.pack` when ``HARK_PACKING=on``; it only ever packs what it
can map back without guessing. A request comes back in exactly one of three places:

- ``transcripts``: built exactly like :meth:`workers.engine.WhisperEngine.transcribe` builds it
  (text, segments, words when asked for, language, duration of the original audio);
- ``fallback`` (key → reason): decode it solo. Not packable (detection, too much speech, alone in its
  group) or ambiguous after decoding: a word straddling a separator, a segment without words over two
  requests, a word in the silence between or after requests, a decoding loop in its words, a decoded
  chunk faster-whisper would decode again at a higher temperature (too repetitive or too unlikely: a
  window is decoded once, at temperature 0; the solo decode keeps the temperature fallback), or a
  request whose speech gave (almost) no words; also every request of a window whose decode raised;
- ``errors`` (key → exception): its cancel token fired before its window was decoded or while it was.

:meth:`WindowPacker.pack` is :meth:`~WindowPacker.plan` (trim, group, lay out) followed by
:meth:`~WindowPacker.decode_window` for each window; a caller that answers each window's requests as
soon as it is mapped (the scheduler's stage) calls them itself, with :meth:`PackPlan.answer_new`.

Requests are never split across windows. Requests share a window only when they decode identically
alone: the same forced language (detection requests are never packed), the same hotwords. The
engine's beam applies to every window. The window is always decoded with word timestamps (the mapping
needs them); a request's ``word_timestamps`` only decides whether its words are returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.transcribe import get_compression_ratio
from faster_whisper.vad import SpeechTimestampsMap, VadOptions, get_speech_timestamps

from hark.schemas import TranscriptionOptions
from workers.engine import WhisperEngine, build_hotwords, forced_language, sanitize_words
from workers.executor import CancelToken
from workers.transcript import SegmentOut, Transcript

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: Audio laid into one window. Whisper's window is 30 s; the last second stays silent so the final
#: clip's last segment closes with a timestamp inside the window instead of being re-decoded.
PACK_WINDOW_SECONDS = 29.0
#: Silence between two requests' speech (on top of the 0.4 s VAD padding each side keeps); see
#: docs/scheduler.md for the measurement behind it.
SEPARATOR_SECONDS = 1.0
#: A word reaching this far into another request's speech straddles the separator.
STRADDLE_TOLERANCE_SECONDS = 0.15
#: A word lying wholly this far outside its request's speech (in a separator, after the last request)
#: was heard in silence. Only wholly: Whisper often stretches a request's last word into the silence
#: after it (a midpoint rule sent a real word solo with a 1.5 s separator).
OUTSIDE_TOLERANCE_SECONDS = 0.25
#: Speech (VAD padding excluded) this long must give at least one word...
MIN_SPEECH_FOR_WORDS_SECONDS = 1.0
#: ... and at least this many words per second of it, or the request is decoded solo.
MIN_WORDS_PER_SECOND = 0.5
#: Decoded text this repetitive (gzip ratio) is a decoding loop, or (a whole decoded chunk) several
#: requests saying the same thing, which Whisper tends to merge: faster-whisper's
#: ``compression_ratio_threshold``.
MAX_COMPRESSION_RATIO = 2.4
#: A chunk decoded with a lower mean log-probability is one faster-whisper would decode again at a
#: higher temperature (its ``log_prob_threshold``). A packed window is decoded once, at temperature 0
#: (a re-decode costs the whole window again, up to five times: the tail under load); the requests of
#: a chunk that trips either threshold are decoded solo instead, where the usual fallback applies.
MIN_AVG_LOGPROB = -1.0
#: Padding Silero keeps around speech (faster-whisper's default ``speech_pad_ms``).
VAD_PAD_SECONDS = 0.4


Answer = Callable[[Hashable, Transcript | None, Exception | None], None]
"""``answer(key, transcript, None)`` or ``answer(key, None, error)``: one request's outcome."""


@dataclass(frozen=True)
class PackRequest:
    """One request offered for packing: its decoded 16 kHz samples and options."""

    key: Hashable
    samples: np.ndarray
    options: TranscriptionOptions
    cancel: CancelToken | None = None


@dataclass
class PackResult:
    """Where each offered request ended (every key is in exactly one of the three)."""

    transcripts: dict[Hashable, Transcript] = field(default_factory=dict)
    fallback: dict[Hashable, str] = field(default_factory=dict)
    """Key → why it must be decoded solo."""
    errors: dict[Hashable, Exception] = field(default_factory=dict)
    """Key → the cancellation error of its token."""
    windows: int = 0
    """Windows decoded."""
    split_segments: int = 0
    """Decoded segments whose words fell in two requests and were split between them by timestamps."""


@dataclass(frozen=True)
class Speech:
    """A request's audio with non-speech removed, as faster-whisper's ``vad_filter`` removes it."""

    audio: np.ndarray
    chunks: list[dict]
    duration: float
    """Seconds of the original audio."""

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE

    def original_time(self, seconds: float, is_end: bool = False) -> float:
        """A time in :attr:`audio` (seconds) mapped back to the original audio, clamped inside it."""
        seconds = min(max(seconds, 0.0), self.seconds)
        mapped = SpeechTimestampsMap(self.chunks, SAMPLE_RATE).get_original_time(seconds, is_end=is_end)
        return min(max(mapped, 0.0), self.duration)


def trim(samples: np.ndarray, vad: VadOptions | None = None) -> Speech:
    """`samples` reduced to its speech chunks (Silero VAD, faster-whisper's defaults), joined."""
    samples = np.asarray(samples, dtype=np.float32)
    chunks = get_speech_timestamps(samples, vad or VadOptions()) if samples.size else []
    audio = np.concatenate([samples[c["start"] : c["end"]] for c in chunks]) if chunks else samples[:0]
    return Speech(audio=audio, chunks=chunks, duration=samples.size / SAMPLE_RATE)


@dataclass
class _Placed:
    """A request laid into a window: its span there (seconds) and what its words map to."""

    index: int
    request: PackRequest
    speech: Speech
    start: float = 0.0
    end: float = 0.0
    pieces: list[tuple[str, float, float]] = field(default_factory=list)
    """(text, start, end) in window time: whole segments or a segment's share of words."""
    words: list[tuple[str, float, float, float]] = field(default_factory=list)
    problem: str | None = None


@dataclass
class PlannedWindow:
    """Requests laid out to share one window (at least two): decoded by :meth:`WindowPacker.decode_window`."""

    language: str
    hotwords: str | None
    members: list[_Placed]

    @property
    def keys(self) -> list[Hashable]:
        return [placed.request.key for placed in self.members]


@dataclass
class PackPlan:
    """What :meth:`WindowPacker.plan` decided: the windows to decode, and a result holding the requests
    answered or sent solo already (more are added as windows are decoded)."""

    windows: list[PlannedWindow] = field(default_factory=list)
    result: PackResult = field(default_factory=PackResult)
    _answered: set[Hashable] = field(default_factory=set)

    def answer_new(self, answer: Answer) -> None:
        """Hand `answer` every transcript and error of the result not handed over yet."""
        for key, transcript in list(self.result.transcripts.items()):
            if key not in self._answered:
                self._answered.add(key)
                answer(key, transcript, None)
        for key, error in list(self.result.errors.items()):
            if key not in self._answered:
                self._answered.add(key)
                answer(key, None, error)


class WindowPacker:
    """Packs short requests of one checkpoint into shared windows (thread-safe: no state per call)."""

    def __init__(self, model: WhisperEngine | WhisperModel, *, max_seconds: float = 10.0,
                 languages: Sequence[str] | None = None, multilingual: bool | None = None,
                 beam_size: int | None = None, separator_seconds: float = SEPARATOR_SECONDS,
                 window_seconds: float = PACK_WINDOW_SECONDS) -> None:  # fmt: skip
        """Bind the packer to a loaded model.

        Args:
            model: The engine (its model, languages and beam are used) or a bare ``WhisperModel``.
            max_seconds: ``HARK_PACKING_MAX_SECONDS``: requests with more speech are decoded solo.
            languages, multilingual, beam_size: Override the engine's (required facts for a bare model:
                languages default to ``["en"]`` for an English-only model, multilingual to the model's).
            separator_seconds: Silence between two requests in a window.
            window_seconds: Audio per window (at most 30).
        """
        self.label = model.label if isinstance(model, WhisperEngine) else ""
        if isinstance(model, WhisperEngine):
            self.model = model.model
            self.languages = list(languages if languages is not None else model.languages)
            self.multilingual = model.multilingual if multilingual is None else multilingual
            self.beam_size = beam_size or model.beam_size
        else:
            self.model = model
            self.multilingual = model.model.is_multilingual if multilingual is None else multilingual
            self.languages = list(languages if languages is not None else ([] if self.multilingual else ["en"]))
            self.beam_size = beam_size or 1
        if not 0 < window_seconds <= 30:
            raise ValueError(f"window_seconds must be in (0, 30] (got {window_seconds:g})")
        self.max_seconds = min(max_seconds, window_seconds)
        self.separator_seconds = separator_seconds
        self.window_seconds = window_seconds

    # --- planning -------------------------------------------------------------------------------
    def group_key(self, options: TranscriptionOptions) -> tuple[str, str] | None:
        """Requests with equal keys may share a window; None: never packed (the language is detected)."""
        language = forced_language(options.language, self.languages, self.multilingual)
        if language is None:
            return None
        return language, build_hotwords(options.keywords) or ""

    def pack(self, requests: Sequence[PackRequest]) -> PackResult:
        """Trim, group, lay out and decode `requests`; see the module docstring for the outcome.

        Raises:
            ValueError: Two requests share a key.
        """
        plan = self.plan(requests)
        for window in plan.windows:
            self.decode_window(window, plan.result)
        logger.debug("packing: %d request(s) -> %d window(s), %d solo, %d error(s)", len(requests),
                     plan.result.windows, len(plan.result.fallback), len(plan.result.errors),
                     extra={"checkpoint": self.label})  # fmt: skip
        return plan.result

    def plan(self, requests: Sequence[PackRequest]) -> PackPlan:
        """Trim and group `requests` and lay them out in windows, decoding nothing yet.

        Requests without speech are answered (empty transcripts) and those that cannot be packed are in
        the fallback of the plan's result already; :meth:`decode_window` decodes each window.

        Raises:
            ValueError: Two requests share a key.
        """
        if len({request.key for request in requests}) != len(requests):
            raise ValueError("every PackRequest needs its own key")
        plan = PackPlan()
        result = plan.result
        groups: dict[tuple[str, str], list[_Placed]] = {}
        for index, request in enumerate(requests):
            key = self.group_key(request.options)
            if key is None:
                result.fallback[request.key] = "language detection"
                continue
            speech = trim(request.samples)
            if speech.audio.size == 0:  # as the solo path: no speech, nothing decoded, no text
                result.transcripts[request.key] = _empty(speech.duration, key[0])
            elif speech.seconds > self.max_seconds:
                result.fallback[request.key] = f"{speech.seconds:.1f} s of speech (limit {self.max_seconds:g} s)"
            else:
                groups.setdefault(key, []).append(_Placed(index, request, speech))
        for (language, hotwords), members in groups.items():
            lengths = [placed.speech.seconds for placed in members]
            for numbers in plan_windows(lengths, self.separator_seconds, self.window_seconds):
                window = [members[number] for number in numbers]
                if len(window) == 1:
                    result.fallback[window[0].request.key] = "alone in its window"
                else:
                    plan.windows.append(PlannedWindow(language, hotwords or None, window))
        return plan

    # --- decoding -------------------------------------------------------------------------------
    def decode_window(self, window: PlannedWindow, result: PackResult) -> None:
        """Decode one planned window and record each of its requests in `result`."""
        language, hotwords = window.language, window.hotwords
        live = [placed for placed in window.members if not _cancelled(placed, result)]
        if len(live) == 1:
            result.fallback[live[0].request.key] = "alone in its window"
        if len(live) <= 1:
            return
        separator = np.zeros(int(self.separator_seconds * SAMPLE_RATE), dtype=np.float32)
        parts: list[np.ndarray] = []
        position = 0
        for placed in live:
            if parts:
                parts.append(separator)
                position += separator.size
            placed.start = position / SAMPLE_RATE
            parts.append(placed.speech.audio)
            position += placed.speech.audio.size
            placed.end = position / SAMPLE_RATE
        audio = np.concatenate(parts)
        started = time.perf_counter()
        result.windows += 1
        try:
            segments, _info = self.model.transcribe(
                audio, language=language, beam_size=self.beam_size, vad_filter=False, word_timestamps=True,
                hotwords=hotwords, temperature=0.0,
            )  # fmt: skip
            for segment in segments:  # decoded as consumed
                result.split_segments += self._assign(segment, live)
                if all(placed.request.cancel is not None and placed.request.cancel.cancelled for placed in live):
                    break
        except Exception as error:  # one window's failure must not fail its requests: each gets a solo try
            logger.warning("packed window of %d request(s) failed (%s); decoding them solo", len(live), error,
                           extra={"checkpoint": self.label})  # fmt: skip
            for placed in live:
                placed.problem = placed.problem or f"window decode failed: {error}"
        for placed in live:
            if _cancelled(placed, result):
                continue
            problem = placed.problem or _too_few_words(placed) or _loop(placed)
            if problem:
                result.fallback[placed.request.key] = problem
            else:
                result.transcripts[placed.request.key] = _transcript(placed, language)
        logger.debug("packed window: %d request(s), %.1f s of audio, %.2f s", len(live), audio.size / SAMPLE_RATE,
                     time.perf_counter() - started, extra={"checkpoint": self.label})  # fmt: skip

    def _assign(self, segment: object, window: list[_Placed]) -> bool:
        """Give a decoded segment's words (or, without words, the segment) to the requests they fall in.

        Returns:
            Whether the segment was split between requests.
        """
        text = segment.text
        if not text.strip():
            return False
        words = segment.words or []
        if not words:
            owners = [p for p in window if segment.start < p.end and segment.end > p.start]
            if len(owners) != 1:
                for placed in owners or [self._owner(window, (segment.start + segment.end) / 2)]:
                    placed.problem = placed.problem or "segment without words over two requests"
                return False
            owners[0].pieces.append((text, segment.start, segment.end))
            return False
        share: dict[int, list[object]] = {}
        for word in words:
            owner = self._owner(window, (word.start + word.end) / 2)
            share.setdefault(owner.index, []).append(word)
            if max(owner.start - word.end, word.start - owner.end) > OUTSIDE_TOLERANCE_SECONDS:  # all in silence
                owner.problem = owner.problem or f"word {word.word.strip()!r} outside the requests' speech"
            for other in window:
                overlap = min(word.end, other.end) - max(word.start, other.start)
                if other is not owner and overlap > STRADDLE_TOLERANCE_SECONDS:
                    for placed in (owner, other):
                        placed.problem = placed.problem or f"word {word.word.strip()!r} straddles a separator"
        # faster-whisper rates the decoded chunk (all its segments alike), and would decode a chunk again
        # at a higher temperature on either sign; a packed window is decoded once, so its requests go solo.
        doubt = ("repetitive chunk" if segment.compression_ratio > MAX_COMPRESSION_RATIO
                 else "low confidence" if segment.avg_logprob < MIN_AVG_LOGPROB else None)  # fmt: skip
        if doubt:
            for placed in window:
                if placed.index in share:
                    placed.problem = placed.problem or doubt
        whole = len(share) == 1
        for placed in window:
            mine = share.get(placed.index)
            if not mine:
                continue
            if whole:
                placed.pieces.append((text, segment.start, segment.end))
            else:
                placed.pieces.append(("".join(w.word for w in mine), mine[0].start, mine[-1].end))
            placed.words.extend((w.word, w.start, w.end, w.probability) for w in mine)
        return not whole

    @staticmethod
    def _owner(window: list[_Placed], when: float) -> _Placed:
        """The request whose zone holds `when`: zones meet in the middle of each separator."""
        for placed, following in pairwise(window):
            if when < (placed.end + following.start) / 2:
                return placed
        return window[-1]


def plan_windows(lengths: Sequence[float], separator: float, capacity: float) -> list[list[int]]:
    """First fit in arrival order: each item goes whole into the first window with room.

    Args:
        lengths: Seconds of each request's speech (each at most `capacity`).
        separator: Seconds of silence between two items of a window.
        capacity: Seconds a window holds.

    Returns:
        The windows, each a list of indexes into `lengths` (in order); every index appears once.
    """
    windows: list[list[int]] = []
    used: list[float] = []
    for index, length in enumerate(lengths):
        for number, window in enumerate(windows):
            if used[number] + separator + length <= capacity + 1e-9:
                window.append(index)
                used[number] += separator + length
                break
        else:
            windows.append([index])
            used.append(length)
    return windows


def _cancelled(placed: _Placed, result: PackResult) -> bool:
    """Move a cancelled request to ``result.errors`` (True) or leave it be."""
    token = placed.request.cancel
    if token is None or placed.request.key in result.errors:
        return placed.request.key in result.errors
    try:
        token.check()
    except Exception as error:  # the token's own error (timeout, drain) is the request's answer
        result.errors[placed.request.key] = error
        return True
    return False


def _loop(placed: _Placed) -> str | None:
    """A decoding loop in the request's own words (a short loop inside a long chunk can leave the
    chunk's ratio under the threshold)."""
    text = "".join(word for word, _start, _end, _probability in placed.words)
    return "decoding loop" if text and get_compression_ratio(text) > MAX_COMPRESSION_RATIO else None


def _too_few_words(placed: _Placed) -> str | None:
    spoken = sum(c["end"] - c["start"] for c in placed.speech.chunks) / SAMPLE_RATE
    content = spoken - 2 * VAD_PAD_SECONDS * len(placed.speech.chunks)
    if content < MIN_SPEECH_FOR_WORDS_SECONDS:
        return None
    count = len(placed.words)
    if count == 0 or count < MIN_WORDS_PER_SECOND * content:
        return f"{count} word(s) for {content:.1f} s of speech"
    return None


def _transcript(placed: _Placed, language: str) -> Transcript:
    """The request's transcript on its own timeline, as the solo path builds it."""
    speech = placed.speech

    def local(seconds: float, is_end: bool = False) -> float:
        return speech.original_time(seconds - placed.start, is_end=is_end)

    segments = []
    for text, start, end in placed.pieces:
        if text.strip():
            begin = local(start)
            segments.append(SegmentOut(text=text.strip(), start=begin, end=max(begin, local(end, is_end=True))))
    words = []
    if placed.request.options.word_timestamps:
        raw = [(w, local(start), local(end, is_end=True), p) for w, start, end, p in placed.words]
        words = sanitize_words(raw, speech.duration)
    return Transcript(
        text="".join(text for text, _start, _end in placed.pieces).strip(),
        language=language,
        language_probability=1.0,
        duration=speech.duration,
        segments=segments,
        words=words,
    )


def _empty(duration: float, language: str) -> Transcript:
    return Transcript(text="", language=language, language_probability=1.0, duration=duration)
