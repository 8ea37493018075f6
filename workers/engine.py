"""The speech engine: faster-whisper (CTranslate2) behind ``transcribe(audio, options, cancel) -> Transcript``.

Engine choices, in one place:

- **Bounded memory.** ``audio`` is an :class:`~workers.audio.AudioSource` the engine pulls from, one
  window (:data:`WINDOW_SECONDS`) at a time, so a request holds about one window of float32 whatever
  its duration (a 4-hour file would be ~900 MB decoded at once, and faster-whisper would compute its
  features in one go). Each window is cut in silence found by Silero VAD: speech that may go on past the
  window's end is carried into the next window, so no word is split or transcribed twice; timestamps
  are offset by the window's start. Audio that fits in one window is transcribed exactly as before.
- **Cancellation.** The :class:`~workers.executor.CancelToken` is checked before each window and
  after each segment; a timed-out or drained call stops there and frees its lane.
- **Silence and noise.** Silero VAD (``vad_filter=True``) drops non-speech before decoding, so
  silence gives ``""`` instead of invented words; windows without speech are not decoded at all.
- **Language.** A dedicated (non-multilingual) checkpoint always decodes in its own language. A
  multilingual one uses the forced language when the request has one; otherwise it detects the
  language on the first window with speech and keeps it for the rest; when the request restricts
  detection (``detect_among``, e.g. ``multi-eu``) the most probable language *within that set* is chosen
  from Whisper's full distribution.
- **Context across windows.** The end of one window's text is the next window's ``initial_prompt``, as
  Whisper conditions each 30 s chunk on the previous one inside a window.
- **Keywords.** Mapped to faster-whisper ``hotwords`` (a prompt before the audio): the words joined
  with spaces, each once, highest boost first (the order decides which survive the length cap).
  Whisper has no per-word weights, so a boost only ranks keywords; writing a word twice was tried and
  made the model repeat words it heard, so it is not done. A boost of 0 or less drops the keyword.
- **Live utterances.** :meth:`WhisperEngine.decode_utterance` decodes one utterance of a live session
  (see :mod:`workers.stream_transcriber`): partials are cheap and bounded (greedy, no timestamps, no
  temperature fallback, a token cap), finals decode like the batch path. Segments Whisper itself rates
  as probably not speech (high ``no_speech_prob`` with a low ``avg_logprob``) are dropped, stricter than
  faster-whisper's own rule, since a live session would show the invented words at once.
- **Batches.** :meth:`WhisperEngine.transcribe_many` runs several requests at once, each through the
  solo :meth:`~WhisperEngine.transcribe` in a thread of its own, their 30 s windows meeting at the
  encoder for one batched encode (:mod:`workers.encoder_batch`): results are the solo ones, and a
  member's error, timeout or cancellation is its own. It pays on a GPU; on a CPU it was measured not to.
- **Words.** Word timestamps are made monotonic, non-overlapping and clamped inside the audio;
  confidence is the word probability clamped to 0..1.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from hark.schemas import Keyword, TranscriptionOptions
from workers.audio import AudioSource, PcmAudio
from workers.device import DevicePlan
from workers.encoder_batch import EncoderMeeting, MeetingWhisperModel
from workers.executor import BatchDone, BatchRequest, CancelToken
from workers.transcript import SegmentOut, Transcript, WordOut
from workers.utterance import DecodeRequest, DecodeResult

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: faster-whisper keeps at most half the decoder context for hotwords; stay well inside it.
MAX_HOTWORDS_CHARS = 400

#: Audio decoded and held per request (about 7.7 MB of float32 per window, plus the carried tail).
WINDOW_SECONDS = 120.0
#: Speech ending closer than this to a window's end may go on: the window is cut before it.
CUT_GUARD_SECONDS = 2.0
#: Longest speech run the cut search accepts before splitting it at a pause (Silero's
#: ``max_speech_duration_s``), so a window always has a boundary to cut at; at most half a window.
CUT_MAX_SPEECH_SECONDS = 30.0
#: Characters of a window's text carried as the next window's prompt.
PROMPT_CHARS = 200

#: A live segment is dropped as invented when Whisper rates it above this no-speech probability...
NO_SPEECH_PROB = 0.6
#: ... and its average token log-probability is below this (faster-whisper's own rule uses -1.0).
NO_SPEECH_LOGPROB = -0.7
#: A segment this repetitive (gzip compression ratio) is a decoding loop, not speech.
MAX_COMPRESSION_RATIO = 2.4
#: Token budget of a partial decode: a fixed part plus this many tokens per second of audio.
PARTIAL_TOKENS_BASE = 16
PARTIAL_TOKENS_PER_SECOND = 6
#: ... and of a batch holding a final (its text must not be cut: fast speech runs ~5 tokens a second).
FINAL_TOKENS_PER_SECOND = 10
#: Live audio shorter than this (0.1 s) is not decoded.
MIN_UTTERANCE_SAMPLES = SAMPLE_RATE // 10
#: Mel frames of Whisper's 30 s input window; a batched partial's audio must fit in it.
WHISPER_FRAMES = 3000
BATCH_MAX_SAMPLES = 30 * SAMPLE_RATE - 1
#: Longest a batch member waits at the encoder for the others (they arrive after their own VAD and
#: features; a member busy decoding a window makes the others encode without it after this).
ENCODER_MEET_SECONDS = 0.25
#: Threads running batch members beside the lane's own (they wait on the encoder or on CTranslate2).
BATCH_THREADS = 64


@dataclass
class _Progress:
    """What one transcription accumulates across windows."""

    language: str | None
    probability: float = 1.0
    detected: bool = False
    prompt: str | None = None
    texts: list[str] = field(default_factory=list)
    segments: list[SegmentOut] = field(default_factory=list)
    words: list[tuple[str, float, float, float]] = field(default_factory=list)


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
        window_seconds: float = WINDOW_SECONDS,
        solo_threads: int = 0,
    ) -> None:
        """Load the model.

        Args:
            model_path: Checkpoint directory (CTranslate2 model.bin, config, tokenizer).
            plan: Device, compute type, lanes and threads (see :mod:`workers.device`).
            languages: The checkpoint's languages (manifest).
            multilingual: The manifest's flag: False means "always decode in ``languages[0]``".
            beam_size: ``HARK_BEAM_SIZE``.
            label: ``name@version``, for logs.
            window_seconds: Audio held and transcribed at a time (tests shrink it; at least 4 guards).
            solo_threads: On CPU, above ``plan.cpu_threads``: load one more replica with this many threads
                for :meth:`transcribe_alone` (a request running alone gets all the cores; one more copy of
                the weights in memory). 0: none.
        """
        if window_seconds < 4 * CUT_GUARD_SECONDS:
            raise ValueError(f"window_seconds must be at least {4 * CUT_GUARD_SECONDS:g} (got {window_seconds:g})")
        self.plan = plan
        self.languages = list(languages)
        self.multilingual = multilingual
        self.beam_size = beam_size
        self.label = label or str(model_path)
        self.window_seconds = window_seconds
        self._cut_vad = VadOptions(max_speech_duration_s=min(CUT_MAX_SPEECH_SECONDS, window_seconds / 2))
        started = time.perf_counter()
        self._batch_pool: ThreadPoolExecutor | None = None
        self.pack_stage: Callable[[Sequence[BatchRequest], BatchDone], list[tuple[int, BatchRequest]]] | None = None
        """Set by the worker with ``HARK_PACKING=on`` (:class:`workers.pack_stage.PackStage`): answers the short
        members of a batch through the window packer and returns the others, run as usual."""
        self.last_encoder_batches: list[int] = []
        """Sizes of the encoder calls of the latest :meth:`transcribe_many` (logs, tests)."""
        self.model = MeetingWhisperModel(
            str(model_path),
            device=plan.device,
            compute_type=plan.compute_type,
            cpu_threads=plan.cpu_threads,
            num_workers=plan.lanes,
            local_files_only=True,
        )
        self._local = threading.local()
        self.solo_model: MeetingWhisperModel | None = None
        if plan.device == "cpu" and solo_threads > plan.cpu_threads:
            self.solo_model = MeetingWhisperModel(str(model_path), device="cpu", compute_type=plan.compute_type,
                                                  cpu_threads=solo_threads, local_files_only=True)  # fmt: skip
        logger.info("loaded %s on %s (%s, %d lane(s) × %d thread(s)) in %.1f s", self.label, plan.device,
                    plan.compute_type, plan.lanes, plan.cpu_threads, time.perf_counter() - started,
                    extra={"checkpoint": self.label})  # fmt: skip

    # --- inference ------------------------------------------------------------------------------
    def transcribe(
        self, audio: AudioSource, options: TranscriptionOptions, cancel: CancelToken | None = None
    ) -> Transcript:
        """Transcribe audio pulled window by window from `audio`.

        Args:
            audio: The source (decoded here, on the lane; see :mod:`workers.audio`).
            options: Language, detection set, word timestamps, keywords.
            cancel: Checked before each window and after each segment (None: never cancelled).

        Returns:
            The transcript; ``text`` is ``""`` when no speech is found.

        Raises:
            AudioError: The audio is unusable (possibly found only at its end).
            SubmissionTimeout, ExecutorDraining: The token was cancelled.
        """
        token = cancel or CancelToken()
        window = int(self.window_seconds * SAMPLE_RATE)
        guard = int(CUT_GUARD_SECONDS * SAMPLE_RATE)
        progress = _Progress(language=forced_language(options.language, self.languages, self.multilingual))
        carry = np.empty(0, dtype=np.float32)
        offset = 0  # samples of the audio before `carry`
        while True:
            token.check()
            fresh = audio.read(window - carry.size)
            final = fresh.size < window - carry.size
            buffer = np.concatenate((carry, fresh)) if carry.size else fresh
            del carry, fresh
            if final:
                cut, speech = buffer.size, True
            else:
                cut, speech = find_cut(buffer, guard, self._cut_vad)
            if speech and cut:
                self._transcribe_window(buffer[:cut], offset, progress, options, token, final)
            offset += cut
            carry = buffer[cut:].copy()  # a copy: the window itself is released
            del buffer
            if final:
                break
        duration = offset / SAMPLE_RATE
        language = progress.language or (self.languages[0] if self.languages else "en")
        return Transcript(
            text="".join(progress.texts).strip(),
            language=language,
            language_probability=float(progress.probability),
            duration=duration,
            segments=progress.segments,
            words=sanitize_words(progress.words, duration),
        )

    def transcribe_alone(self, audio: AudioSource, options: TranscriptionOptions,
                         cancel: CancelToken | None = None) -> Transcript:  # fmt: skip
        """:meth:`transcribe` on the solo replica (all the cores) when there is one: the executor calls it
        for a request that runs with nothing else running or waiting."""
        if self.solo_model is None:
            return self.transcribe(audio, options, cancel)
        self._local.model = self.solo_model
        try:
            return self.transcribe(audio, options, cancel)
        finally:
            self._local.model = None

    def _window_model(self) -> MeetingWhisperModel:
        """The model this thread's windows run on (the solo replica inside :meth:`transcribe_alone`)."""
        return getattr(self._local, "model", None) or self.model

    def transcribe_many(self, requests: Sequence[BatchRequest], done: BatchDone,
                        encoder_wait: float = ENCODER_MEET_SECONDS) -> None:  # fmt: skip
        """Transcribe several requests together: their windows share batched encoder calls.

        Each request runs :meth:`transcribe` unchanged in a thread of its own (the first on the caller's);
        `done` is called as each ends, with its transcript or its own error.

        Args:
            requests: ``(audio, options, cancel)`` per member.
            done: ``done(index, transcript, None)`` or ``done(index, None, error)``.
            encoder_wait: Longest a member waits at the encoder for the others.
        """
        if self.pack_stage is not None and len(requests) > 1:
            # Always the stage's requests, even when it returns every member: it has read their audio
            # (a long member comes back as a replay of what was read, the original source is past it).
            left = self.pack_stage(requests, done)
            indexes = [index for index, _request in left]
            requests = [request for _index, request in left]
            outer = done

            def done(index: int, result: Transcript | None, error: BaseException | None) -> None:
                outer(indexes[index], result, error)

            if not requests:
                return
        meeting = EncoderMeeting(len(requests), encoder_wait, self.model.encode_batch)

        def run(index: int) -> None:
            audio, options, token = requests[index]
            meeting.join()
            try:
                transcript = self.transcribe(audio, options, token)
            except BaseException as error:
                meeting.leave()
                done(index, None, error)
            else:
                meeting.leave()
                done(index, transcript, None)
            finally:
                meeting.part()

        if self._batch_pool is None:
            self._batch_pool = ThreadPoolExecutor(BATCH_THREADS, thread_name_prefix="hark-batch")
        others = [self._batch_pool.submit(run, index) for index in range(1, len(requests))]
        if requests:
            run(0)
        for future in others:
            future.result()
        self.last_encoder_batches = list(meeting.batches)
        logger.debug("batch of %d: encoder calls of %s", len(requests), meeting.batches,
                     extra={"checkpoint": self.label})  # fmt: skip

    def measure_item_bytes(self, items: int = 2) -> int | None:
        """GPU memory one batch item costs: free memory before and after a batched encode of `items`
        empty windows, per item (CUDA only; None on a CPU or when torch cannot tell)."""
        if self.plan.device != "cuda":
            return None
        from workers.device import gpu_memory_info

        before = gpu_memory_info()
        mels = self.model.feature_extractor.mel_filters.shape[0]
        self.model.encode_batch(np.zeros((items, mels, WHISPER_FRAMES), dtype=np.float32))
        after = gpu_memory_info()
        if before is None or after is None:
            return None
        return max(0, before[0] - after[0]) // items or None

    def _transcribe_window(self, samples: np.ndarray, offset: int, progress: _Progress,
                           options: TranscriptionOptions, token: CancelToken, final: bool) -> None:  # fmt: skip
        """Transcribe one window (``offset`` samples into the audio) into `progress`."""
        if progress.language is None and options.detect_among and not progress.detected:
            progress.detected = True  # once: a choice outside the set is not retried per window
            progress.language, progress.probability = self._detect_among(samples, options.detect_among)
        segments, info = self._window_model().transcribe(
            samples,
            language=progress.language,
            beam_size=self.beam_size,
            vad_filter=True,
            word_timestamps=options.word_timestamps,
            hotwords=build_hotwords(options.keywords),
            initial_prompt=progress.prompt,
        )
        start_s = offset / SAMPLE_RATE
        end_s = start_s + samples.size / SAMPLE_RATE
        texts: list[str] = []
        for segment in segments:  # the generator decodes as it is consumed
            texts.append(segment.text)
            start = _clamp(segment.start + start_s, start_s, end_s)
            end = _clamp(segment.end + start_s, start, end_s)
            text = segment.text.strip()
            if text:
                progress.segments.append(SegmentOut(text=text, start=start, end=end))
            if options.word_timestamps and segment.words:
                progress.words.extend(
                    (w.word, w.start + start_s, w.end + start_s, w.probability) for w in segment.words
                )
            token.check()
        if progress.language is None and (info.duration_after_vad > 0 or final):
            progress.language, progress.probability = info.language, float(info.language_probability)
        progress.texts.extend(texts)
        window_text = "".join(texts).strip()
        if window_text:
            progress.prompt = tail_words(window_text, PROMPT_CHARS)
        logger.debug("window %.1f-%.1f s: %d segment(s), %.1f s of speech", start_s, end_s, len(texts),
                     info.duration_after_vad, extra={"checkpoint": self.label})  # fmt: skip

    def decode_utterance(self, request: DecodeRequest) -> DecodeResult:
        """Decode one live utterance: a cheap partial or a final (see the module docstring).

        Returns:
            The text (``""`` when nothing but silence or noise was heard) with times relative to the
            request's samples.
        """
        samples = np.asarray(request.samples, dtype=np.float32)
        language = forced_language(request.language, self.languages, self.multilingual)
        probability = 1.0
        if samples.size < MIN_UTTERANCE_SAMPLES:  # too short to hold a word (a cut at an utterance's very end)
            return DecodeResult(text="", language=language or (self.languages[0] if self.languages else "en"))
        if language is None and request.detect_among and samples.size:
            choice, probability = self._detect_among(samples, request.detect_among)
            language = choice
        hotwords = build_hotwords(request.keywords)
        prompt = request.prompt
        if request.prefix and hotwords:  # faster-whisper ignores hotwords next to a prefix: prompt them
            prompt = f"{hotwords} {prompt}" if prompt else hotwords
            hotwords = None
        if request.kind == "partial":
            seconds = samples.size / SAMPLE_RATE
            settings: dict[str, object] = dict(
                beam_size=1, without_timestamps=True, temperature=0.0, condition_on_previous_text=False,
                word_timestamps=False, max_new_tokens=int(PARTIAL_TOKENS_BASE + PARTIAL_TOKENS_PER_SECOND * seconds),
            )  # fmt: skip
        else:
            settings = dict(beam_size=self.beam_size, word_timestamps=request.word_timestamps)
        segments, info = self.model.transcribe(
            samples, language=language, vad_filter=request.vad_filter, initial_prompt=prompt or None,
            prefix=request.prefix or None, hotwords=hotwords, **settings,
        )  # fmt: skip
        texts: list[str] = []
        kept: list[tuple[str, float, float]] = []
        words: list[tuple[str, float, float, float]] = []
        for segment in segments:
            if not is_speech(segment.text, segment.no_speech_prob, segment.avg_logprob, segment.compression_ratio):
                continue
            texts.append(segment.text)
            kept.append((segment.text.strip(), float(segment.start), float(segment.end)))
            if segment.words:
                words.extend((w.word, float(w.start), float(w.end), float(w.probability)) for w in segment.words)
        if language is None:
            language, probability = info.language, float(info.language_probability)
        return DecodeResult(text="".join(texts).strip(), language=language, language_probability=float(probability),
                            words=words, segments=kept)  # fmt: skip

    def can_batch(self, request: DecodeRequest) -> bool:
        """Whether `request` can share a batched call (:meth:`decode_many`) with other sessions' decodes.

        Partials can; finals too when they need neither word timestamps nor beam search (the default
        beam of 1): greedy text is all they ask. Detection (no language yet) and audio outside
        0.1-30 s go alone.
        """
        language = forced_language(request.language, self.languages, self.multilingual)
        size = np.asarray(request.samples).size
        if language is None or not MIN_UTTERANCE_SAMPLES <= size <= BATCH_MAX_SAMPLES:
            return False
        return request.kind == "partial" or (not request.word_timestamps and self.beam_size == 1)

    def decode_many(self, requests: Sequence[DecodeRequest]) -> list[DecodeResult]:
        """Several live sessions' decodes in one batched call: one encoder pass over all their windows.

        Whisper pays a full 30 s window per decode whatever the utterance's length, so the sessions'
        decodes share the call (greedy, no timestamps, each with its own prompt, prefix and language).
        Requests that cannot be batched (:meth:`can_batch`) are decoded one by one with
        :meth:`decode_utterance`.

        Returns:
            One result per request, in order.
        """
        results: list[DecodeResult | None] = [None] * len(requests)
        batch: list[tuple[int, DecodeRequest, str]] = []
        for index, request in enumerate(requests):
            if self.can_batch(request):
                language = forced_language(request.language, self.languages, self.multilingual)
                batch.append((index, request, language or "en"))
            else:
                results[index] = self.decode_utterance(request)
        if len(batch) == 1:
            index, request, _language = batch[0]
            results[index] = self.decode_utterance(request)
        elif batch:
            for (index, _request, _language), result in zip(batch, self._decode_batch(batch), strict=True):
                results[index] = result
        return [result for result in results if result is not None]

    def _decode_batch(self, batch: Sequence[tuple[int, DecodeRequest, str]]) -> list[DecodeResult]:
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        features, prompts, tokenizers, seconds = [], [], [], []
        for _index, request, language in batch:
            samples = np.asarray(request.samples, dtype=np.float32)
            mel = self.model.feature_extractor(samples)[:, :WHISPER_FRAMES]
            features.append(np.pad(mel, ((0, 0), (0, WHISPER_FRAMES - mel.shape[1]))))
            tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                                  language=language)  # fmt: skip
            hotwords = build_hotwords(request.keywords)
            context = " ".join(part for part in (hotwords if request.prefix else None, request.prompt) if part)
            previous = tokenizer.encode(" " + context.strip()) if context else []
            prompts.append(self.model.get_prompt(tokenizer, previous, without_timestamps=True, prefix=request.prefix,
                                                 hotwords=None if request.prefix else hotwords))  # fmt: skip
            tokenizers.append(tokenizer)
            seconds.append(samples.size / SAMPLE_RATE)
        has_final = any(request.kind == "final" for _index, request, _language in batch)
        per_second = FINAL_TOKENS_PER_SECOND if has_final else PARTIAL_TOKENS_PER_SECOND
        new_tokens = int(PARTIAL_TOKENS_BASE + per_second * max(seconds))
        max_length = min(self.model.max_length, max(len(prompt) for prompt in prompts) + new_tokens)
        suppressed = list(get_suppressed_tokens(tokenizers[0], [-1]))
        outputs = self.model.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(features))), prompts, beam_size=1,
            max_length=max_length, suppress_blank=True, suppress_tokens=suppressed, return_scores=True,
            return_no_speech_prob=True,
        )  # fmt: skip
        results = []
        for (_index, _request, language), tokenizer, output, length in zip(batch, tokenizers, outputs, seconds,
                                                                           strict=True):  # fmt: skip
            tokens = output.sequences_ids[0]
            text = tokenizer.decode([token for token in tokens if token < tokenizer.eot]).strip()
            avg_logprob = output.scores[0] * len(tokens) / (len(tokens) + 1)
            if not is_speech(text, output.no_speech_prob, avg_logprob, get_compression_ratio(text)):
                text = ""
            results.append(DecodeResult(text=text, language=language, segments=[(text, 0.0, length)] if text else []))
        return results

    def _detect_among(self, samples: np.ndarray, among: Sequence[str]) -> tuple[str | None, float]:
        """The most probable language of the speech within `among` (None: let the model decide)."""
        _top, _probability, all_probs = self._window_model().detect_language(audio=samples, vad_filter=True)
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
        self.transcribe(PcmAudio(noise), TranscriptionOptions(language=language))
        if self.solo_model is not None:
            self.transcribe_alone(PcmAudio(noise), TranscriptionOptions(language=language))
        took = time.perf_counter() - started
        logger.info("warm-up inference of %s took %.2f s", self.label, took, extra={"checkpoint": self.label})
        return took


def find_cut(samples: np.ndarray, guard: int, vad: VadOptions) -> tuple[int, bool]:
    """Where to end a window that is not the audio's last: a point in silence, before any open speech.

    Args:
        samples: The window.
        guard: Samples at the end where speech may still be going on.
        vad: Silero options of the search (``max_speech_duration_s`` splits long speech at a pause).

    Returns:
        ``(cut, speech)``: transcribe ``samples[:cut]`` (when `speech`: it holds speech) and carry the
        rest into the next window.
    """
    limit = samples.size - guard
    chunks = get_speech_timestamps(samples, vad)
    if not chunks:
        return limit, False
    last = chunks[-1]
    if last["end"] <= limit:  # every speech chunk closed before the guard zone
        return limit, True
    if last["start"] > 0:  # the last chunk may go on: cut where it starts (padded, so in silence)
        return int(last["start"]), len(chunks) > 1
    return limit, True  # one speech run fills the window (shorter than max_speech_duration_s)


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


def is_speech(text: str, no_speech_prob: float, avg_logprob: float, compression_ratio: float) -> bool:
    """Whether a decoded live segment is worth showing (not silence, noise or a decoding loop)."""
    if not any(character.isalnum() for character in text):
        return False
    if no_speech_prob > NO_SPEECH_PROB and avg_logprob < NO_SPEECH_LOGPROB:
        return False
    return compression_ratio <= MAX_COMPRESSION_RATIO


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
        start = round(max(_clamp(start, 0.0, duration), previous_end), 3)
        end = round(max(_clamp(end, 0.0, duration), start), 3)
        confidence = min(1.0, max(0.0, float(probability))) if probability == probability else 0.0  # NaN -> 0
        words.append(WordOut(word=text, start=start, end=end, probability=round(confidence, 4)))
        previous_end = end
    return words


def tail_words(text: str, limit: int) -> str:
    """The end of `text`, at most `limit` characters, starting at a word boundary when cut."""
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    return tail.split(" ", 1)[-1] if " " in tail else tail


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(float(value), low), max(high, low))
