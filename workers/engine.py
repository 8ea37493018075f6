"""The speech engine: faster-whisper (CTranslate2) behind ``transcribe(samples, options) -> Transcript``.

Engine choices, in one place:

- **Silence and noise.** Silero VAD (``vad_filter=True``) drops non-speech before decoding, so
  silence gives ``""`` instead of invented words.
- **Language.** A dedicated (non-multilingual) checkpoint always decodes in its own language. A
  multilingual one uses the forced language when the request has one; otherwise it detects the
  language, and when the request restricts detection (``detect_among``, e.g. ``multi-eu``) the most
  probable language *within that set* is chosen from Whisper's full distribution.
- **Keywords.** Mapped to faster-whisper ``hotwords`` (a prompt before the audio): the words joined
  with spaces, each once, highest boost first (the order decides which survive the length cap).
  Whisper has no per-word weights, so a boost only ranks keywords; writing a word twice was tried and
  made the model repeat words it heard, so it is not done. A boost of 0 or less drops the keyword.
- **Words.** Word timestamps are made monotonic, non-overlapping and clamped inside the audio;
  confidence is the word probability clamped to 0..1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel

from hark.schemas import Keyword, TranscriptionOptions
from workers.device import DevicePlan
from workers.transcript import SegmentOut, Transcript, WordOut

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: faster-whisper keeps at most half the decoder context for hotwords; stay well inside it.
MAX_HOTWORDS_CHARS = 400


class WhisperEngine:
    """One loaded faster-whisper checkpoint; thread-safe, ``plan.lanes`` calls run in parallel."""

    def __init__(
        self,
        model_path: str | Path,
        plan: DevicePlan,
        *,
        languages: Sequence[str],
        multilingual: bool,
        beam_size: int = 1,
        label: str = "",
    ) -> None:
        """Load the model.

        Args:
            model_path: Checkpoint directory (CTranslate2 model.bin, config, tokenizer).
            plan: Device, compute type, lanes and threads (see :mod:`workers.device`).
            languages: The checkpoint's languages (manifest).
            multilingual: The manifest's flag: False means "always decode in ``languages[0]``".
            beam_size: ``HARK_BEAM_SIZE``.
            label: ``name@version``, for logs.
        """
        self.plan = plan
        self.languages = list(languages)
        self.multilingual = multilingual
        self.beam_size = beam_size
        self.label = label or str(model_path)
        started = time.perf_counter()
        self.model = WhisperModel(
            str(model_path),
            device=plan.device,
            compute_type=plan.compute_type,
            cpu_threads=plan.cpu_threads,
            num_workers=plan.lanes,
            local_files_only=True,
        )
        logger.info("loaded %s on %s (%s, %d lane(s) × %d thread(s)) in %.1f s", self.label, plan.device,
                    plan.compute_type, plan.lanes, plan.cpu_threads, time.perf_counter() - started,
                    extra={"checkpoint": self.label})  # fmt: skip

    # --- inference ------------------------------------------------------------------------------
    def transcribe(self, samples: np.ndarray, options: TranscriptionOptions) -> Transcript:
        """Transcribe 16 kHz mono float32 samples.

        Args:
            samples: The audio (see :func:`workers.audio.decode_audio`).
            options: Language, detection set, word timestamps, keywords.

        Returns:
            The transcript; ``text`` is ``""`` when no speech is found.
        """
        duration = len(samples) / SAMPLE_RATE
        language = forced_language(options.language, self.languages, self.multilingual)
        probability = 1.0
        if language is None and options.detect_among:
            language, probability = self._detect_among(samples, options.detect_among)
        segments, info = self.model.transcribe(
            samples,
            language=language,
            beam_size=self.beam_size,
            vad_filter=True,
            word_timestamps=options.word_timestamps,
            hotwords=build_hotwords(options.keywords),
        )
        segment_list: list[SegmentOut] = []
        raw_words: list[tuple[str, float, float, float]] = []
        texts: list[str] = []
        for segment in segments:  # the generator decodes as it is consumed
            texts.append(segment.text)
            start, end = _clamp(segment.start, duration), _clamp(segment.end, duration)
            text = segment.text.strip()
            if text:
                segment_list.append(SegmentOut(text=text, start=start, end=max(start, end)))
            if options.word_timestamps and segment.words:
                raw_words.extend((w.word, w.start, w.end, w.probability) for w in segment.words)
        if language is None:
            language, probability = info.language, float(info.language_probability)
        return Transcript(
            text="".join(texts).strip(),
            language=language,
            language_probability=float(probability),
            duration=duration,
            segments=segment_list,
            words=sanitize_words(raw_words, duration),
        )

    def _detect_among(self, samples: np.ndarray, among: Sequence[str]) -> tuple[str | None, float]:
        """The most probable language of the speech within `among` (None: let the model decide)."""
        _top, _probability, all_probs = self.model.detect_language(audio=samples, vad_filter=True)
        choice = pick_language(all_probs, among)
        if choice is None:
            logger.warning("none of %s is known to %s; detecting freely", list(among), self.label,
                           extra={"checkpoint": self.label})  # fmt: skip
            return None, 1.0
        return choice

    def warm_up(self) -> float:
        """Run one inference on 1 s of low noise (loads VAD, allocates buffers); seconds taken."""
        started = time.perf_counter()
        noise = np.random.default_rng(0).normal(0.0, 0.01, SAMPLE_RATE).astype(np.float32)
        language = forced_language(None, self.languages, self.multilingual) or self.languages[0]
        # Without VAD, so that the encoder and decoder run even though the noise holds no speech.
        segments, _info = self.model.transcribe(noise, language=language, beam_size=self.beam_size)
        for _ in segments:
            pass
        self.transcribe(noise, TranscriptionOptions(language=language))
        took = time.perf_counter() - started
        logger.info("warm-up inference of %s took %.2f s", self.label, took, extra={"checkpoint": self.label})
        return took


# --- pure helpers -------------------------------------------------------------------------------


def forced_language(requested: str | None, languages: Sequence[str], multilingual: bool) -> str | None:
    """The language to decode in, or None to detect.

    A dedicated checkpoint always decodes in its language (the requested one when it lists several
    and the request names one of them); a multilingual checkpoint uses the request's language.
    """
    if not multilingual and languages:
        return requested if requested in languages else languages[0]
    return requested or None


def pick_language(all_probs: Iterable[tuple[str, float]], among: Sequence[str]) -> tuple[str, float] | None:
    """The most probable ``(language, probability)`` of `all_probs` whose code is in `among`."""
    wanted = set(among)
    best: tuple[str, float] | None = None
    for code, probability in all_probs:
        if code in wanted and (best is None or probability > best[1]):
            best = (code, float(probability))
    return best


def build_hotwords(keywords: Sequence[Keyword]) -> str | None:
    """faster-whisper ``hotwords`` for the request's keywords (None when there are none).

    Each distinct keyword appears once, highest boost first; the text is capped at
    :data:`MAX_HOTWORDS_CHARS` (the least boosted keywords are dropped first).
    """
    ranked = sorted(enumerate(keywords), key=lambda item: (-item[1].boost, item[0]))
    parts: list[str] = []
    seen: set[str] = set()
    length = 0
    for _index, keyword in ranked:
        word = " ".join(keyword.word.split())
        if not word or keyword.boost <= 0 or word.lower() in seen:
            continue
        if length + len(word) + 1 > MAX_HOTWORDS_CHARS:
            break
        parts.append(word)
        seen.add(word.lower())
        length += len(word) + 1
    return " ".join(parts) or None


def sanitize_words(raw: Iterable[tuple[str, float, float, float]], duration: float) -> list[WordOut]:
    """Words stripped, clamped to [0, duration], ordered and non-overlapping; probability in 0..1.

    Each word starts no earlier than the previous one ends, and ends no earlier than it starts.
    """
    words: list[WordOut] = []
    previous_end = 0.0
    for text, start, end, probability in raw:
        text = text.strip()
        if not text:
            continue
        start = round(max(_clamp(start, duration), previous_end), 3)
        end = round(max(_clamp(end, duration), start), 3)
        confidence = min(1.0, max(0.0, float(probability))) if probability == probability else 0.0  # NaN -> 0
        words.append(WordOut(word=text, start=start, end=end, probability=round(confidence, 4)))
        previous_end = end
    return words


def _clamp(value: float, duration: float) -> float:
    return min(max(float(value), 0.0), max(duration, 0.0))
