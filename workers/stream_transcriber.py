"""The speech logic of one live session: audio in, partial and final transcripts out.

Pure of Redis and WebSockets: the session task feeds decoded audio (float32 mono 16 kHz), polls, and
publishes what comes back. Driven from one thread; decodes run elsewhere (an :class:`UtteranceDecoder`,
normally the checkpoint's inference lanes), so :meth:`StreamTranscriber.feed` never waits for one.

- **Segmenting.** Silero VAD (:mod:`workers.stream_vad`) finds speech; an utterance starts with
  :data:`PRE_ROLL_MS` of audio before the detected onset (first phonemes are quiet) and ends after
  ``eou_timeout_ms`` of silence. With ``endpointing`` off the silence only pauses the utterance (the gap
  is left out of its audio); with ``vad`` off all audio is speech. An utterance longer than
  ``max_utterance_s`` is cut with a final at the quietest 20 ms of its last second, and one whose partial
  text reaches ``max_words`` words at the quietest 20 ms after the audio that partial covered, so the
  cost of each update stays bounded.
- **Partials.** The growing utterance is re-decoded each ``partial_interval_s`` of new audio (audio time:
  partials follow what was said, whatever the network's jitter), only when speech came since the last
  request, with at most one partial in flight: under load the cadence stretches instead of queueing.
  Stabilised by :class:`~workers.stream_agreement.LocalAgreement`. Partials skip Whisper's own VAD when
  the session's already chose the audio (a tenth of the ~0.7 s a tiny.en partial takes on one thread,
  most of it the encoder's fixed 30 s window).
- **Finals.** Submitted at once (never behind a partial) and emitted strictly in order; a partial that
  comes back after its utterance was finalized is dropped, and one of the next utterance waits until the
  finals before it are out. A final with no text is not sent, except
  the ones a client asked for (``finalize``: ``from_finalize``; ``close``: ``is_last``), which always are.
- **Speculative finals.** Waiting for the endpoint and only then decoding put the final ``eou_timeout_ms``
  plus a whole decode (~0.4-0.65 s on CPU, whatever the length) after the end of speech, and cost a decode
  on top of the partials. So once speech has paused for :data:`CANDIDATE_SILENCE_MS` (the VAD's trailing
  silence, well below the timeout) the open utterance is decoded as a *candidate*: a final's request
  (no prefix, Whisper's VAD, word timestamps when asked for) of its audio up to then, in the partial's
  slot (a partial in flight is superseded: finals never wait behind partials). If the endpoint comes with
  no speech since, the candidate is the final (the audio after it is silence by the VAD's word; no second
  decode), out as soon as both are there; ``finalize`` and ``close`` in that pause take it too. If speech
  resumes first, its result is an ordinary partial of the still open utterance. Partials are not started
  during a pause (its candidate, or the speech resuming, comes soon and covers more).
- **Language.** Forced by the request, else detected (within ``detect_among`` when given) until the first
  final with text, whose language the session keeps, as the batch path keeps its first window's.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from hark.schemas import TranscriptionOptions
from hark.sessions import SentenceOut, StreamParams, TranscriptionMessage, VadEvent, WordOut
from workers.stream_agreement import LocalAgreement
from workers.stream_text import format_text, format_word, split_sentences, tail_text
from workers.stream_vad import CHUNK, SAMPLE_RATE, StreamingVad, VadChange, VadModel, load_vad_model
from workers.utterance import DecodeRequest, DecodeResult, UtteranceDecoder

__all__ = ["DecodeRequest", "DecodeResult", "StreamTranscriber", "UtteranceDecoder"]

logger = logging.getLogger(__name__)

Message = TranscriptionMessage | VadEvent

#: Audio kept before the detected speech onset.
PRE_ROLL_MS = 250
#: Samples handled at a time: the length cap and the partial cadence are checked this often (128 ms).
BLOCK = 4 * CHUNK
#: A length cut falls at the quietest frame of the utterance's last this-many seconds.
CUT_SEARCH_S = 1.0
#: Frame of the quietest-point search.
CUT_FRAME = 320
#: Characters of the previous finals given to Whisper as the prompt of the next decodes.
PROMPT_CHARS = 200
#: Pause in speech (the VAD's trailing silence) after which the open utterance gets its candidate final.
#: Short enough that pause detection + this + a decode come close to a 500-800 ms end-of-utterance timeout;
#: long enough that gaps inside a sentence seldom trigger one (on 8 espeak sentences Silero's were 32-128 ms,
#: one 192 ms; a candidate there is not wasted, it shows as a partial, but it supersedes one in flight).
CANDIDATE_SILENCE_MS = 160
#: Whether the previous finals' text is the prompt. Off: on 16 unrelated espeak sentences tiny.en's WER
#: was 0.088 without / 0.120 with it (beam 1) and 0.064 / 0.104 (beam 5); the prompt made it rewrite a
#: sentence to continue the previous one.
PROMPT_WITH_CONTEXT = False


@dataclass(eq=False)
class _Utterance:
    """The audio of one utterance: pieces of the stream, the last one open while speech goes on."""

    onset: int
    """Stream sample where its speech began (the VAD's onset, or where the previous utterance was cut)."""
    pieces: list[list[int]]
    """``[start, end]`` stream samples; ``end`` is -1 while the piece is open."""
    requested: int
    """Stream sample the last partial request reached (the start until the first one)."""
    closed_audio: list[np.ndarray] = field(default_factory=list)
    offset: int | None = None
    """Stream sample where its speech ended (VAD) or where it was cut."""
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    last_partial: str = ""

    @property
    def is_open(self) -> bool:
        return self.pieces[-1][1] < 0

    @property
    def start(self) -> int:
        return self.pieces[0][0]

    def end(self, position: int) -> int:
        return position if self.is_open else self.pieces[-1][1]

    def length(self, position: int) -> int:
        return sum((position if end < 0 else end) - start for start, end in self.pieces)

    def close_piece(self, at: int, store: _AudioStore) -> None:
        piece = self.pieces[-1]
        if piece[1] >= 0:
            return
        piece[1] = max(piece[0], at)
        self.closed_audio.append(store.slice(piece[0], piece[1]))

    def resume(self, at: int) -> None:
        if not self.is_open:
            self.pieces.append([max(at, self.pieces[-1][1]), -1])

    def samples(self, store: _AudioStore, position: int) -> np.ndarray:
        parts = list(self.closed_audio)
        if self.is_open:
            parts.append(store.slice(self.pieces[-1][0], position))
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.float32)

    def to_stream(self, seconds: float) -> float:
        """Stream seconds of a time in the utterance's audio (whose pieces are back to back)."""
        remaining = max(0.0, seconds) * SAMPLE_RATE
        for start, end in self.pieces:
            if remaining <= end - start:
                return (start + remaining) / SAMPLE_RATE
            remaining -= end - start
        return self.pieces[-1][1] / SAMPLE_RATE


class _AudioStore:
    """The recent stream audio: appended in blocks, sliced by stream position, trimmed from the front."""

    def __init__(self) -> None:
        self._blocks: deque[tuple[int, np.ndarray]] = deque()
        self.end = 0

    def append(self, samples: np.ndarray) -> None:
        self._blocks.append((self.end, samples))
        self.end += samples.size

    def slice(self, start: int, end: int) -> np.ndarray:
        parts = []
        for first, block in self._blocks:
            last = first + block.size
            if last <= start:
                continue
            if first >= end:
                break
            parts.append(block[max(0, start - first) : min(block.size, end - first)])
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.float32)

    def trim(self, before: int) -> None:
        while self._blocks and self._blocks[0][0] + self._blocks[0][1].size <= before:
            self._blocks.popleft()


@dataclass
class _Partial:
    """The session's one speculative decode in flight: a partial, or a candidate final (``silence`` set)."""

    utterance: _Utterance
    future: Future[DecodeResult]
    end: int
    """Stream sample its audio reaches."""
    request: DecodeRequest | None = None
    """Candidates: what was asked (a final reuses it only if it would ask the same)."""
    silence: int | None = None
    """Candidates: the VAD's :attr:`~workers.stream_vad.StreamingVad.silence_start` of the pause it was
    taken in; while the VAD still reports it, no speech came after the candidate's audio."""
    shown: bool = False
    """Candidates: already shown as a partial while the pause goes on (the final follows at the endpoint)."""


@dataclass
class _Final:
    utterance: _Utterance | None
    """None for a final the client asked for while no speech was pending."""
    future: Future[DecodeResult] | None
    from_finalize: bool
    is_last: bool
    at: int


class StreamTranscriber:
    """Partials and finals of one live session (see the module docstring); one thread drives it."""

    def __init__(
        self,
        session_id: str,
        params: StreamParams,
        options: TranscriptionOptions,
        decoder: UtteranceDecoder,
        *,
        partial_interval_s: float = 0.4,
        max_utterance_s: float = 20.0,
        vad_model: VadModel | None = None,
        pre_roll_ms: int = PRE_ROLL_MS,
        prompt_with_context: bool = PROMPT_WITH_CONTEXT,
        candidate_silence_ms: int | None = CANDIDATE_SILENCE_MS,
    ) -> None:
        """Args:
        session_id: Put in every message.
        params: The client's query (segmenting, VAD, output fields).
        options: Language to force or detect among, keywords (as routing decided).
        decoder: Runs the decodes (e.g. :class:`~workers.utterance.LaneDecoder`).
        partial_interval_s: Audio between two partial decodes of an utterance.
        max_utterance_s: Longest utterance before it is cut with a final.
        vad_model: The process' Silero model (loaded here when None and ``params.vad``).
        pre_roll_ms: Audio kept before (and after) detected speech.
        prompt_with_context: Give the previous finals' text as the decode prompt.
        candidate_silence_ms: Pause after which a candidate final is decoded (None: finals only at the
            endpoint, as before speculative finals; there are none without VAD or endpointing anyway).
        """
        self.session_id = session_id
        self.params = params
        self.options = options
        self.decoder = decoder
        self._interval = max(1, int(partial_interval_s * SAMPLE_RATE))
        self._max_samples = max(BLOCK, int(max_utterance_s * SAMPLE_RATE))
        self._vad = (
            StreamingVad(vad_model or load_vad_model(), params.vad_threshold, params.vad_min_speech_ms,
                         params.eou_timeout_ms, pre_roll_ms)
            if params.vad else None
        )  # fmt: skip
        #: Audio kept behind the newest sample, for the pre-roll of a speech start the VAD reports late.
        self._keep = int((pre_roll_ms + params.vad_min_speech_ms) * SAMPLE_RATE / 1000) + 4 * CHUNK + SAMPLE_RATE // 2
        self._candidate_after = (
            max(1, int(candidate_silence_ms * SAMPLE_RATE / 1000))
            if candidate_silence_ms is not None and params.vad and params.endpointing else None
        )  # fmt: skip
        self._prompt_with_context = prompt_with_context
        self._keywords = list(options.keywords or params.keywords)
        self._language = options.language
        self._store = _AudioStore()
        self._position = 0
        self._floor = 0  # audio before this sample was given to a final
        self._last_speech = 0  # end of the newest sample the VAD called speech
        self._utterance: _Utterance | None = None
        self._partial: _Partial | None = None
        self._finals: deque[_Final] = deque()
        self._texts: list[str] = []  # finals' text as sent
        self._raw_texts: list[str] = []  # finals' text as decoded (the prompt)
        self._closed = False
        self._done = False
        self._failure: Exception | None = None

    # --- the driver's calls -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once the ``is_last`` final was returned by :meth:`poll`."""
        return self._done

    @property
    def busy(self) -> bool:
        """True while a decode is in flight or a final waits to be returned.

        A finished candidate whose pause goes on is not: it waits for audio (the endpoint or more speech),
        and a driver that waits for ``busy`` to clear before feeding more must not wait for it.
        """
        slot = self._partial
        return (slot is not None and not (slot.future.done() and self._held(slot))) or bool(self._finals)

    def feed(self, samples: np.ndarray) -> list[Message]:
        """Take the next audio (float32 16 kHz, any length); returns VAD events. Ignored after :meth:`close`.

        Raises:
            ExecutorDraining, ExecutorClosed: The decoder takes no more work (the session should end).
        """
        if self._closed:
            return []
        data = np.asarray(samples, dtype=np.float32).reshape(-1)
        messages: list[Message] = []
        for offset in range(0, data.size, BLOCK):
            messages += self._process(data[offset : offset + BLOCK].copy())
        self._store.trim(self._keep_from())
        return messages

    def poll(self) -> list[Message]:
        """Partials and finals whose decodes finished (finals in order); starts the next partial if due.

        Raises:
            Exception: A final's decode failed (its error; the final is dropped), or the decoder refused work.
        """
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        messages: list[Message] = []
        while self._finals:
            head = self._finals[0]
            if head.future is not None and not head.future.done():
                break
            self._finals.popleft()
            if head.is_last:
                self._done = True
            try:
                message = self._final_message(head)
            except Exception as error:
                if not messages:
                    raise
                self._failure = error  # raised by the next poll, after the finals before it are out
                return messages
            if message is not None:
                messages.append(message)
        partial = self._partial
        # A partial of the next utterance waits for the previous one's final: the client sees them in order.
        # A candidate whose pause goes on waits for the endpoint (it becomes the final) or for speech.
        stale = partial is not None and partial.utterance is not self._utterance
        if partial is not None and partial.future.done() and (stale or not self._finals):
            if not self._held(partial):
                self._partial = None
                messages += self._on_partial(partial)
            elif not partial.shown and not partial.future.cancelled():
                # The pause goes on: show the candidate's text now (the client need not wait for the
                # endpoint, or for audio that may not come) and keep it to become the final.
                partial.shown = True
                messages += self._on_partial(partial)
        self._maybe_partial()
        return messages

    def finalize(self) -> None:
        """Close the current utterance now: its final (``from_finalize``, possibly empty) comes out of poll()."""
        if self._closed:
            return
        self._end_utterance(from_finalize=True)

    def close(self) -> None:
        """Flush: the last utterance's final, or an empty one, comes out of poll() with ``is_last``."""
        if self._closed:
            return
        self._closed = True
        self._end_utterance(is_last=True)
        if self._partial is not None:
            self._partial.future.cancel()  # skipped if no lane took it yet; dropped when it comes back

    def cancel(self) -> None:
        """The session is over without a goodbye (client gone, error): drop every decode not started yet."""
        self._closed = True
        if self._partial is not None:
            self._partial.future.cancel()
        for final in self._finals:
            if final.future is not None:
                final.future.cancel()

    # --- segmenting ---------------------------------------------------------------------------------
    def _process(self, block: np.ndarray) -> list[Message]:
        start = self._position
        self._store.append(block)
        self._position += block.size
        messages: list[Message] = []
        if self._vad is None:
            self._last_speech = self._position
            speaking = True
        else:
            for change in self._vad.feed(block):
                messages += self._on_change(change)
            speaking = self._vad.speaking
            if speaking:
                self._last_speech = max(self._last_speech, self._vad.last_speech)
        if speaking and self._utterance is None:  # speech goes on after a finalize or a cut
            self._open(max(start, self._floor))
        utterance = self._utterance
        if utterance is not None and utterance.is_open and utterance.length(self._position) >= self._max_samples:
            self._cut(utterance, self._quiet_point(utterance, self._position - int(CUT_SEARCH_S * SAMPLE_RATE)))
        self._maybe_candidate()
        self._maybe_partial()
        return messages

    def _on_change(self, change: VadChange) -> list[Message]:
        messages: list[Message] = []
        if self.params.vad_events:
            kind = "speech_started" if change.kind == "start" else "speech_ended"
            messages.append(VadEvent(type=kind, session_id=self.session_id,
                                     timestamp=round(change.sample / SAMPLE_RATE, 3)))  # fmt: skip
        utterance = self._utterance
        if change.kind == "start":
            if utterance is None:
                self._open(max(change.bound, self._floor), onset=max(change.sample, self._floor))
            else:
                utterance.resume(max(change.bound, self._floor))
        elif utterance is not None:
            utterance.close_piece(change.bound, self._store)
            utterance.offset = max(utterance.onset, change.sample)
            if self.params.endpointing:
                self._submit_final(utterance, candidate=self._covering(utterance, change.sample))
        return messages

    def _open(self, start: int, onset: int | None = None) -> None:
        self._utterance = _Utterance(onset=start if onset is None else onset, pieces=[[start, -1]], requested=start)

    def _cut(self, utterance: _Utterance, at: int) -> None:
        """End `utterance` at `at` with a final; speech still going on continues in a new one."""
        if utterance.is_open:
            utterance.close_piece(at, self._store)
            utterance.offset = max(utterance.onset, at)
        self._submit_final(utterance)
        speaking = self._vad is None or self._vad.speaking
        if speaking:
            self._open(max(at, self._floor))

    def _quiet_point(self, utterance: _Utterance, low: int) -> int:
        """The middle of the quietest frame of the open piece after sample `low` (the newest one if none)."""
        low = max(utterance.pieces[-1][0], low)
        audio = self._store.slice(low, self._position)
        frames = audio.size // CUT_FRAME
        if frames < 1:
            return self._position
        energy = np.square(audio[: frames * CUT_FRAME].reshape(frames, CUT_FRAME)).mean(axis=1)
        return low + int(np.argmin(energy)) * CUT_FRAME + CUT_FRAME // 2

    def _keep_from(self) -> int:
        keep = self._position - self._keep
        utterance = self._utterance
        if utterance is not None and utterance.is_open:
            keep = min(keep, utterance.pieces[-1][0])
        return max(0, keep)

    def _end_utterance(self, *, from_finalize: bool = False, is_last: bool = False) -> None:
        utterance = self._utterance
        if utterance is not None and utterance.length(self._position) > 0:
            pause = self._vad.silence_start if self._vad is not None else None
            self._submit_final(utterance, from_finalize=from_finalize, is_last=is_last,
                               candidate=self._covering(utterance, pause))  # fmt: skip
            return
        self._utterance = None
        self._finals.append(_Final(None, None, from_finalize=from_finalize, is_last=is_last, at=self._position))

    # --- decodes ------------------------------------------------------------------------------------
    def _request(self, samples: np.ndarray, kind: str, prefix: str | None = None) -> DecodeRequest:
        prompt = tail_text(" ".join(self._raw_texts), PROMPT_CHARS) if self._prompt_with_context else None
        word_timestamps = kind == "final" and (self.params.word_timestamps or self.params.sentence_timestamps)
        return DecodeRequest(samples=samples, kind=kind, language=self._language,  # type: ignore[arg-type]
                             detect_among=self.options.detect_among if self._language is None else None,
                             prompt=prompt or None, prefix=prefix or None, keywords=self._keywords,
                             word_timestamps=word_timestamps,
                             vad_filter=kind == "final" or self._vad is None)  # fmt: skip

    def _submit_final(self, utterance: _Utterance, *, from_finalize: bool = False, is_last: bool = False,
                      candidate: _Partial | None = None) -> None:  # fmt: skip
        """Queue `utterance`'s final: `candidate`'s decode (see :meth:`_covering`) or a new one."""
        if candidate is not None:
            self._partial = None  # the slot's decode is now the final's
            utterance.close_piece(candidate.end, self._store)
            future = candidate.future
        else:
            utterance.close_piece(self._position, self._store)
            future = self.decoder.submit(self._request(utterance.samples(self._store, self._position), "final"))
        if utterance.offset is None:
            utterance.offset = utterance.end(self._position)
        self._finals.append(_Final(utterance, future, from_finalize=from_finalize, is_last=is_last,
                                   at=utterance.end(self._position)))  # fmt: skip
        self._floor = max(self._floor, utterance.end(self._position))
        if self._utterance is utterance:
            self._utterance = None
        if self._partial is not None and self._partial.utterance is utterance:
            self._partial.future.cancel()

    def _maybe_candidate(self) -> None:
        """Decode the open utterance as its candidate final once speech has paused long enough."""
        vad, utterance = self._vad, self._utterance
        if self._candidate_after is None or vad is None or utterance is None or self._closed or not utterance.is_open:
            return
        pause = vad.silence_start
        if pause is None or vad.position - pause < self._candidate_after:
            return
        slot = self._partial
        if slot is not None and slot.utterance is utterance and slot.silence == pause:
            return  # this pause has its candidate
        start = utterance.pieces[-1][0]  # with endpointing an utterance is one piece
        if pause <= start:
            return  # opened inside this pause (after a finalize or a cut): no speech of its own to finish early
        # An endpoint's final gets the pad after the speech; the candidate has less of it yet, and makes up the
        # rest with zeros (silence to the VAD, and what Whisper pads its 30 s window with anyway): the same
        # length as the endpoint's request, which tiny.en can be sensitive to ("brown fox" with a 250 ms
        # tail, "round-fark" with 160 ms on an espeak sentence).
        end = min(vad.position, pause + vad.pad)
        samples = utterance.samples(self._store, end)
        if end < pause + vad.pad:
            samples = np.concatenate((samples, np.zeros(pause + vad.pad - end, dtype=np.float32)))
        request = self._request(samples, "final")
        future = self.decoder.submit(request)
        if slot is not None:
            slot.future.cancel()  # superseded (it covers less audio): its result is dropped when it comes back
        self._partial = _Partial(utterance, future, end, request=request, silence=pause)
        utterance.requested = max(utterance.requested, end)

    def _held(self, slot: _Partial) -> bool:
        """`slot` is a candidate of the open utterance whose pause goes on (no speech after its audio yet)."""
        return (slot.silence is not None and slot.utterance is self._utterance and self._vad is not None
                and self._vad.silence_start == slot.silence)  # fmt: skip

    def _covering(self, utterance: _Utterance, pause: int | None) -> _Partial | None:
        """The candidate that can be `utterance`'s final now: taken in the pause starting at `pause` (so
        no speech came after its audio), not cancelled, and asking what a final would ask now (a language
        detected or a prompt grown since it was sent would change the request)."""
        slot = self._partial
        if pause is None or slot is None or slot.request is None or slot.utterance is not utterance:
            return None
        if slot.silence != pause or slot.future.cancelled():
            return None
        now = self._request(slot.request.samples[:0], "final")
        if (now.language, now.detect_among, now.prompt) != (slot.request.language, slot.request.detect_among,
                                                            slot.request.prompt):  # fmt: skip
            return None
        return slot

    def _maybe_partial(self) -> None:
        utterance = self._utterance
        if utterance is None or self._partial is not None or self._closed:
            return
        if self._candidate_after is not None and self._vad is not None and self._vad.silence_start is not None:
            return  # paused: the candidate, or the speech resuming, comes within CANDIDATE_SILENCE_MS
        end = utterance.end(self._position)
        if self._last_speech <= utterance.requested or end - utterance.requested < self._interval:
            return
        request = self._request(utterance.samples(self._store, self._position), "partial", utterance.agreement.prefix)
        self._partial = _Partial(utterance, self.decoder.submit(request), end)
        utterance.requested = end

    def _on_partial(self, partial: _Partial) -> list[Message]:
        utterance = partial.utterance
        if partial.future.cancelled() or utterance is not self._utterance or self._closed:
            return []
        error = partial.future.exception()
        if error is not None:
            logger.warning("partial decode failed in session %s: %s", self.session_id, error)
            return []
        result = partial.future.result()
        tail = utterance.agreement.update(result.text.split())
        shown = utterance.agreement.committed + tail
        text = format_text(" ".join(shown), self.params.punctuate, self.params.capitalize)
        messages: list[Message] = []
        if text and text != utterance.last_partial:
            utterance.last_partial = text
            messages.append(TranscriptionMessage(
                session_id=self.session_id, transcript=text, transcription=text, is_final=False,
                language=self._language or result.language, start=_seconds(utterance.onset),
                end=_seconds(partial.end),
            ))  # fmt: skip
        if self.params.max_words and len(text.split()) >= self.params.max_words:
            # after the audio the counted words came from (its last word may have been cut off there)
            at = self._quiet_point(utterance, partial.end) if utterance.is_open else utterance.end(self._position)
            self._cut(utterance, at)
        return messages

    # --- finals -------------------------------------------------------------------------------------
    def _final_message(self, final: _Final) -> TranscriptionMessage | None:
        result = final.future.result() if final.future is not None else None  # raises the decode's error
        raw = result.text.strip() if result is not None else ""
        text = format_text(raw, self.params.punctuate, self.params.capitalize)
        if not text and not (final.from_finalize or final.is_last):
            return None
        if text and result is not None:
            self._texts.append(text)
            self._raw_texts.append(raw)
            if self._language is None:
                self._language = result.language
        utterance = final.utterance
        if utterance is not None:
            start, end = _seconds(utterance.onset), _seconds(utterance.offset or utterance.onset)
            # Whisper puts the first word at the start of the pre-roll: no word starts before the onset.
            low, high = start, _seconds(utterance.end(final.at))
        else:
            start = end = low = high = _seconds(final.at)
        timed = self._timed_words(result, utterance, low, high) if text else []
        if timed:
            end = max(end, timed[-1][2])  # a trailing sound quieter than the VAD's threshold
        params = self.params
        words = None
        if params.word_timestamps:
            words = [WordOut(word=shown, start=s, end=e, confidence=p) for w, s, e, p in timed
                     if (shown := format_word(w, params.punctuate, params.capitalize))]  # fmt: skip
        sentences = None
        if params.sentence_timestamps:
            spans = split_sentences([(w, s, e) for w, s, e, _p in timed]) if timed else []
            if text and not spans:
                spans = [(raw, start, end)]
            sentences = [SentenceOut(text=t, start=s, end=e) for span_text, s, e in spans
                         if (t := format_text(span_text, params.punctuate, params.capitalize))]  # fmt: skip
        return TranscriptionMessage(
            session_id=self.session_id, transcript=text, transcription=text, is_final=True, is_last=final.is_last,
            from_finalize=final.from_finalize, language=(result.language if result else None) or self._language,
            start=start, end=end, words=words, utterances=sentences,
            full_transcript=" ".join(self._texts) if params.full_transcript else None,
        )  # fmt: skip

    @staticmethod
    def _timed_words(result: DecodeResult | None, utterance: _Utterance | None, low: float,
                     high: float) -> list[tuple[str, float, float, float]]:  # fmt: skip
        """The result's words in stream seconds: inside the utterance, ordered, not overlapping."""
        if result is None or utterance is None:
            return []
        timed: list[tuple[str, float, float, float]] = []
        previous = low
        for word, start, end, probability in result.words:
            word = word.strip()
            if not word:
                continue
            begin = round(max(previous, min(max(utterance.to_stream(start), low), high)), 3)
            finish = round(max(begin, min(utterance.to_stream(end), high)), 3)
            confidence = min(1.0, max(0.0, probability)) if probability == probability else 0.0
            timed.append((word, begin, finish, round(confidence, 4)))
            previous = finish
        return timed


def _seconds(samples: int) -> float:
    return round(samples / SAMPLE_RATE, 3)
